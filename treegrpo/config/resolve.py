"""From what a user wrote to a RunConfig: YAML, `key=value` assignments, presets and overrides.

cfg = resolve_config(preset="tiny-treegrpo", overrides={"tree.k": 4})
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from treegrpo.config.merge import deep_merge
from treegrpo.config.presets import preset_dict
from treegrpo.config.run import RunConfig, declared_settings, expand_dotted
from treegrpo.errors import ConfigError

_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$")


@functools.cache
def _yaml_loader() -> type:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))
    return Loader


def load_yaml(text: str) -> Any:
    """Safe YAML that also reads `1e-5` as a float (PyYAML's YAML 1.1 rules need `1.0e-5`)."""
    return yaml.load(text, Loader=_yaml_loader())  # a SafeLoader subclass: no arbitrary objects


def parse_assignment(text: str) -> tuple[str, Any]:
    """`"tree.k=4"` -> ("tree.k", 4). Values are parsed as YAML scalars/lists/maps."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(text, "expected key=value")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(key.strip(), f"cannot parse value {raw!r}: {exc}") from exc
    return key.strip(), value


def resolve_config(
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    assignments: Iterable[str] = (),
) -> RunConfig:
    """Preset, then nested/dotted overrides, then `key=value` assignments; validated."""
    data: dict[str, Any] = preset_dict(preset) if preset else {}
    if overrides:
        data = deep_merge(data, expand_dotted(overrides))
    for text in assignments:
        key, value = parse_assignment(text)
        data = deep_merge(data, expand_dotted({key: value}))
    return RunConfig.from_dict(data)


def config_errors(
    preset: str | None = None, overrides: Mapping[str, Any] | None = None
) -> list[ConfigError]:
    """Every problem of a preset plus overrides, not only the first: after each error the
    faulty setting is taken out (back to its default) and the rest checked again. Empty when
    the config is valid. Problems that depend on one another may show only the first."""
    try:
        data: dict[str, Any] = preset_dict(preset) if preset else {}
        if overrides:
            data = deep_merge(data, expand_dotted(overrides))
    except ConfigError as exc:
        return [exc]
    data = copy.deepcopy(data)
    errors: list[ConfigError] = []
    for _ in range(len(declared_settings()) + 8):
        try:
            RunConfig.from_dict(data)
            return errors
        except ConfigError as exc:
            errors.append(exc)
            if not _take_out(data, exc.field):
                return errors
        except (TypeError, ValueError, RecursionError):
            return errors
    return errors


def _take_out(data: dict[str, Any], dotted: str) -> bool:
    """Remove the setting `dotted` from nested `data`; False when it is not there."""
    parts = dotted.split(".")
    node: Any = data
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        return False
    del node[parts[-1]]
    return True
