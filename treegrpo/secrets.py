"""Secrets are references in a config, never values (torch-free; the backend validates with it).

A stored config is read by every API reader and written into checkpoints, so a field that holds
a secret (its name ends in key, token, secret or password) is refused there. In its place the
config names where the worker finds the value:

    reward_options: {remote: {url: ..., api_key_env: REWARD_KEY}}      # the worker's environment
    reward_options: {remote: {url: ..., api_key_secret: reward-key}}   # `treegrpo secret set`

`resolve_options` turns `<field>_env` / `<field>_secret` into `<field>` with the value a
caller-supplied resolver returns (the core reads no environment and no database itself), just
before the rewards are built; the resolved options never go back into the config.
`redact` replaces such fields' values for answers and logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from treegrpo.errors import ConfigError

SECRET_SUFFIXES = ("key", "token", "secret", "password")
REFERENCES = {"_env": "env", "_secret": "secret"}  # suffix -> where the value lives
REDACTED = "***"
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")

# (kind: "env" | "secret", name) -> the value; raises KeyError-like errors with a message.
Resolver = Callable[[str, str], str]


def is_secret_field(name: str) -> bool:
    return name.lower().endswith(SECRET_SUFFIXES)


def _reference(key: str) -> tuple[str, str] | None:
    """(field, kind) of a `<field>_env` / `<field>_secret` reference, else None."""
    for suffix, kind in REFERENCES.items():
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], kind
    return None


def check_options(where: str, options: Mapping[str, Any]) -> None:
    """Refuse a secret value in one reward's options; check references name something."""
    for key, value in options.items():
        reference = _reference(key)
        if reference is not None:
            if not isinstance(value, str) or not NAME.match(value):
                raise ConfigError(
                    f"{where}.{key}",
                    f"expected the name of a {'variable' if reference[1] == 'env' else 'secret'}"
                    f" (letters, digits, _ . -), got {value!r}",
                )
        elif is_secret_field(key):
            raise ConfigError(
                f"{where}.{key}",
                "a secret may not be stored in a config (every API reader and checkpoint would "
                f"hold it): use {key}_env: NAME (the worker's environment variable NAME) or "
                f"{key}_secret: NAME (stored with `treegrpo secret set NAME`)",
            )


def resolve_options(
    options: Mapping[str, Mapping[str, Any]], resolve: Resolver | None
) -> dict[str, dict[str, Any]]:
    """Each reward's options with every reference replaced by the value it names."""
    out: dict[str, dict[str, Any]] = {}
    for reward, values in options.items():
        resolved: dict[str, Any] = {}
        for key, value in values.items():
            reference = _reference(key)
            if reference is None:
                resolved[key] = value
                continue
            field, kind = reference
            where = f"reward_options.{reward}.{key}"
            if resolve is None:
                raise ConfigError(where, "names a secret, but nothing here can resolve it")
            try:
                resolved[field] = resolve(kind, str(value))
            except (KeyError, LookupError) as exc:
                reason = exc.args[0] if exc.args else str(exc)
                raise ConfigError(where, str(reason)) from None
        out[reward] = resolved
    return out


def environment_resolver(environ: Mapping[str, str]) -> Resolver:
    """References to environment variables only (`treegrpo train` on one machine)."""

    def resolve(kind: str, name: str) -> str:
        if kind != "env":
            raise LookupError(
                f"server-side secret {name!r} can only be read by a studio worker; here use "
                "<field>_env: VARIABLE"
            )
        if not environ.get(name):
            raise LookupError(f"the environment variable {name} is not set")
        return environ[name]

    return resolve


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with every secret-named field's value replaced."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and is_secret_field(key) and value is not None
            else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


# `name: value`, `name=value`, `"name": "value"` where name ends in a secret suffix.
_IN_TEXT = re.compile(
    r"""(?P<name>[A-Za-z0-9_]*(?:key|token|secret|password))(?P<q1>['"]?)(?P<sep>\s*[:=]\s*)"""
    r"""(?P<q2>['"]?)(?P<value>[^'",\s}\])]+)""",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """A log line with the values of secret-named fields replaced."""
    return _IN_TEXT.sub(lambda m: f"{m['name']}{m['q1']}{m['sep']}{m['q2']}{REDACTED}", text)
