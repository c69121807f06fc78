"""Which files a config from the studio may name: only those under the operator's roots (torch-free).

A job's config names folders and files that the worker opens (`model`, a reward's `path`,
`processor_path` or `head`, a prompt file, ...). Through the API anyone with a key writes that
config, so each such path must lie under one of the roots the operator lists
(TREEGRPO_MODEL_ROOTS), and it is resolved first (links and `..` followed, `os.path.realpath`):
a symlink inside a root that points out of it, or `root/../../etc`, is refused like `/etc`.
The API checks at submit and the worker checks again (the same function); `treegrpo train` on
one's own machine installs no roots and stays free.

A refusal names the field and the rule, and reads the same whether the path exists or not.
`ORG/NAME[@REV]` is a hub id, found in the Hugging Face cache: allowed when the cache lies under
a root. Under roots a folder relative to the working directory is written `./models/x` (a bare
`models/x` reads as a hub id), so the answer never depends on what exists on the worker's disk.

    roots = (Path("/app/models"), Path("/hf"))
    within_roots("model", "/app/models/sd3", roots)              # -> Path('/app/models/sd3')
    path_problems(config_dict, roots, hub_cache=Path("/hf/hub"))  # -> [ConfigError, ...]
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from treegrpo.config import BUILTIN_MODELS, ConfigError
from treegrpo.hub import parse_hub_id

RULE = "file rule"
# Option names whose values are files or folders (a reward's `path`, `processor_path`,
# the aesthetic `head`, a prompt `file`, ...); any value spelled like a path counts too.
PATH_KEYS = ("path", "head", "file", "folder", "dir")
PATH_SUFFIXES = ("_path", "_file", "_folder", "_dir")


def looks_like_path(value: str) -> bool:
    return value.startswith(("/", "~", "./", "../", "\\")) or value in (".", "..")


def _is_path_key(key: str) -> bool:
    return key in PATH_KEYS or key.endswith(PATH_SUFFIXES)


def resolved(value: str, base: Path | None = None) -> Path:
    """The real path `value` names: ~ expanded, relative to `base` (default: the working
    directory), every link and `..` followed; parts that do not exist are kept as written."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return Path(os.path.realpath(path))


def _under(path: Path, roots: Sequence[Path]) -> bool:
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if path == real_root or real_root in path.parents:
            return True
    return False


def refusal(field: str, roots: Sequence[Path]) -> ConfigError:
    listed = ", ".join(str(root) for root in roots) or "none"
    return ConfigError(
        field,
        f"{RULE}: a path in a job sent to the studio must lie in a folder the operator allows, "
        f"after links and '..' are resolved (TREEGRPO_MODEL_ROOTS: {listed})",
    )


def within_roots(field: str, value: str, roots: Sequence[Path], base: Path | None = None) -> Path:
    """The resolved path if it lies under a root, else the refusal naming `field`."""
    path = resolved(value, base)
    if not _under(path, roots):
        raise refusal(field, roots)
    return path


def hub_cache_allowed(cache: Path | None, roots: Sequence[Path]) -> bool:
    return cache is not None and _under(Path(os.path.realpath(cache)), roots)


def path_fields(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted field, value) of every file or folder a config names: `model` unless built in,
    values of path-named options, and any value spelled like a path (not URLs, not list items:
    prompts are text)."""
    for key, value in config.items():
        field = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from path_fields(value, f"{field}.")
        elif isinstance(value, str) and "://" not in value:
            if field == "model":
                if value not in BUILTIN_MODELS:
                    yield field, value
            elif _is_path_key(str(key)) or looks_like_path(value):
                yield field, value


def path_problems(
    config: Mapping[str, Any],
    roots: Sequence[Path],
    hub_cache: Path | None,
    base: Path | None = None,
) -> list[ConfigError]:
    """A refusal for each path of `config` outside the roots (hub ids: when the cache is)."""
    problems = []
    for field, value in path_fields(config):
        if not looks_like_path(value) and parse_hub_id(value) is not None:
            if not hub_cache_allowed(hub_cache, roots):
                problems.append(refusal(field, roots))
            continue
        try:
            within_roots(field, value, roots, base)
        except ConfigError as exc:
            problems.append(exc)
    return problems


# -- the worker's installed roots ----------------------------------------------------------------

_installed: tuple[Path, ...] | None = None


def install(roots: Sequence[Path] | None) -> None:
    """Make `roots` this process's file rule (None: no rule, as on one's own machine)."""
    global _installed
    _installed = None if roots is None else tuple(roots)


def installed() -> tuple[Path, ...] | None:
    return _installed
