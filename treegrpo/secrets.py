"""Secrets are references in a config, never values (torch-free; the backend validates with it).

A stored config is read by every API reader and written into checkpoints, so a field that holds
a secret (its name ends in key, token, secret or password) is refused there. In its place the
config names where the worker finds the value:

    reward_options: {remote: {url: ..., api_key_env: REWARD_KEY}}      # the worker's environment
    reward_options: {remote: {url: ..., api_key_secret: reward-key}}   # `treegrpo secret set`

`resolve_options` turns `<field>_env` / `<field>_secret` into `<field>` with the value a
caller-supplied resolver returns (the core reads no environment and no database itself), just
before the rewards are built; the resolved options never go back into the config. The resolver
also gets the URLs the value will be sent to (`destinations`: the URL-valued options of the
same reward), so a studio worker can refuse a secret bound to other hosts.
`redact` replaces such fields' values for answers and logs.

A config sent to the studio may reference only what the operator opened to jobs
(`reference_problems`, at submit and again in the worker): `_env` names listed in
TREEGRPO_REFERABLE_ENV (never any variable of the worker: it holds the database URL and the
secrets key), `_secret` names whose hosts (`treegrpo secret set NAME --host H`) cover every URL
of that reward.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from treegrpo.errors import ConfigError

if TYPE_CHECKING:
    from treegrpo.egress import HostRule

SECRET_SUFFIXES = ("key", "token", "secret", "password")
REFERENCES = {"_env": "env", "_secret": "secret"}  # suffix -> where the value lives
REDACTED = "***"
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")

# (kind: "env" | "secret", name, destinations) -> the value; raises KeyError-like errors with a
# message. `destinations` are the URLs the value goes to (the reward's URL-valued options).
Resolver = Callable[[str, str, tuple[str, ...]], str]


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


def secret_names(options: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The stored secrets that `reward_options` references (`<field>_secret: NAME`)."""
    return {
        str(value)
        for values in options.values()
        for key, value in values.items()
        if (reference := _reference(key)) is not None and reference[1] == "secret"
    }


def destinations(options: Mapping[str, Any]) -> tuple[str, ...]:
    """The URLs among one reward's options (`url`, `server`, ...): where a resolved value goes."""
    return tuple(value for value in options.values() if isinstance(value, str) and "://" in value)


def reference_problems(
    options: Mapping[str, Mapping[str, Any]],
    referable_env: Collection[str],
    secret_hosts: Mapping[str, Sequence[HostRule]] | None,
) -> list[ConfigError]:
    """A ConfigError for each reference of `reward_options` that a job from the studio may not
    make. `secret_hosts` maps the stored secrets' names to their hosts (None: not checked
    here, the resolver does)."""
    problems = []
    for reward, values in options.items():
        urls = destinations(values)
        for key, value in values.items():
            reference = _reference(key)
            if reference is None:
                continue
            where = f"reward_options.{reward}.{key}"
            if reference[1] == "env":
                if value not in referable_env:
                    problems.append(ConfigError(where, _env_refusal(str(value), referable_env)))
                continue
            if secret_hosts is None:
                continue
            if value not in secret_hosts:
                problems.append(ConfigError(where, f"no secret named {value!r}"))
                continue
            problem = secret_destination_problem(str(value), secret_hosts[value], urls)
            if problem is not None:
                problems.append(ConfigError(where, problem))
    return problems


def _env_refusal(name: str, referable_env: Collection[str]) -> str:
    listed = ", ".join(sorted(referable_env)) or "none"
    return (
        f"secret rule: {name} is not a variable the operator lets jobs read "
        f"(TREEGRPO_REFERABLE_ENV: {listed}); a job may never read the worker's other variables"
    )


def secret_destination_problem(
    name: str, hosts: Sequence[HostRule], urls: Sequence[str]
) -> str | None:
    """Why secret `name`, bound to `hosts`, may not go to `urls`, or None."""
    from treegrpo.egress import shown, split_url

    if not urls:
        return (
            f"secret rule: secret {name!r} is sent only to a URL of the same reward "
            "(url or server), and this reward names none"
        )
    for url in urls:
        try:
            parts, host, port = split_url("url", url)
        except ConfigError as exc:  # the URL's own field reports it; the secret stays home
            return f"secret rule: secret {name!r} goes only to a valid URL ({exc.reason})"
        if not any(rule.matches(host, port, parts.scheme) for rule in hosts):
            return (
                f"secret rule: secret {name!r} may be sent only to {shown(hosts)}, not to "
                f"{host}:{port} (an admin sets its hosts: treegrpo secret set {name} --host H)"
            )
    return None


def referable_resolver(environ: Mapping[str, str], referable: Collection[str]) -> Resolver:
    """References to the listed environment variables only (a studio worker's `_env`)."""

    def resolve(kind: str, name: str, destinations: tuple[str, ...]) -> str:
        if kind != "env":
            raise LookupError(f"{name!r} is not an environment reference")
        if name not in referable:
            raise LookupError(_env_refusal(name, referable))
        if not environ.get(name):
            raise LookupError(f"the worker's environment has no variable {name}")
        return environ[name]

    return resolve


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
                resolved[field] = resolve(kind, str(value), destinations(values))
            except (KeyError, LookupError) as exc:
                reason = exc.args[0] if exc.args else str(exc)
                raise ConfigError(where, str(reason)) from None
        out[reward] = resolved
    return out


def environment_resolver(environ: Mapping[str, str]) -> Resolver:
    """References to environment variables only (`treegrpo train` on one machine)."""

    def resolve(kind: str, name: str, destinations: tuple[str, ...]) -> str:
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
