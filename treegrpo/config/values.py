"""Checks of the run's own kinds of value: model, device, prompts, rewards and trackers.

Each is a `Check` (fields.py): it validates and says what it accepts, for the docs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from collections.abc import Iterable, Mapping
from typing import Any

from treegrpo.config.fields import Check, Choice, Float, Text
from treegrpo.datasets.ref import DatasetRef
from treegrpo.errors import ConfigError
from treegrpo.prompts import PROMPT_SETS
from treegrpo.rewards.names import REWARD_NAMES
from treegrpo.secrets import check_options

BUILTIN_MODELS = ("digits", "digits-ddim", "tiny-random", "tiny-random-ddim")
MAX_PROMPT_CHARS = 500
MAX_PROMPTS = 4096
MAX_OPTION_CHARS = 2048  # a path or a URL

TRACKERS = ("tensorboard", "wandb", "mlflow")
# The module each tracker imports, and the extra that installs it.
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclasses.dataclass(frozen=True)
class Model(Check):
    """A built-in model name, a local folder or a hub id ORG/NAME[@REV] (checked where the
    model loads: the folder must exist, the id must be in the local Hugging Face cache)."""

    def __call__(self, name: str, value: Any) -> str:
        text = Text(max_chars=1024)(name, value)
        looks_like_path = "/" in text or text.startswith(".")
        if text not in BUILTIN_MODELS and not looks_like_path:
            raise ConfigError(
                name,
                f"unknown model {text!r}: use one of {', '.join(BUILTIN_MODELS)}, a path to a "
                "local diffusers folder or a hub id ORG/NAME in the local Hugging Face cache",
            )
        return text

    def allowed(self) -> str:
        return " | ".join(BUILTIN_MODELS) + " | a folder path | a cached hub id ORG/NAME[@REV]"


@dataclasses.dataclass(frozen=True)
class Device(Check):
    def __call__(self, name: str, value: Any) -> str:
        text = Text()(name, value)
        if not _DEVICE_PATTERN.match(text):
            raise ConfigError(name, f"must be auto, cpu, cuda or cuda:N; got {text!r}")
        return text

    def allowed(self) -> str:
        return "auto | cpu | cuda | cuda:N"


@dataclasses.dataclass(frozen=True)
class Prompts(Check):
    """A prompt-set name, a non-empty list of prompts (stored as a tuple), or a dataset split
    `{dataset: NAME_OR_ID, split: ...}` (treegrpo/datasets/; `split` defaults to
    `default_split`)."""

    default_split: str = "train"

    def __call__(self, name: str, value: Any) -> str | tuple[str, ...] | DatasetRef:
        if isinstance(value, DatasetRef):
            return value
        if isinstance(value, Mapping):
            return DatasetRef.parse(name, value, self.default_split)
        if isinstance(value, str):
            return str(Choice(tuple(PROMPT_SETS))(name, value))
        if isinstance(value, list | tuple):
            if not value:
                raise ConfigError(name, "must not be an empty list")
            if len(value) > MAX_PROMPTS:
                raise ConfigError(name, f"at most {MAX_PROMPTS} prompts, got {len(value)}")
            prompt = Text(max_chars=MAX_PROMPT_CHARS)
            return tuple(prompt(f"{name}[{i}]", p) for i, p in enumerate(value))
        raise ConfigError(
            name,
            f"expected a prompt-set name, a list of prompts or {{dataset: NAME, split: "
            f"{self.default_split}}}, got {value!r}",
        )

    def allowed(self) -> str:
        return (
            f"a prompt set, 1..{MAX_PROMPTS} prompts of <= {MAX_PROMPT_CHARS} chars, or "
            f"{{dataset: NAME_OR_ID, split: {self.default_split}}}"
        )


@dataclasses.dataclass(frozen=True)
class Reward(Check):
    """One reward name, or {name: weight} with positive weights (kept as sorted pairs)."""

    def __call__(self, name: str, value: Any) -> str | tuple[tuple[str, float], ...]:
        reward_name = Choice(REWARD_NAMES)
        if isinstance(value, str):
            return str(reward_name(name, value))
        if isinstance(value, Mapping):
            if not value:
                raise ConfigError(name, "must name at least one reward")
            weight = Float(0.0, lo_open=True)
            pairs = []
            for key, item in value.items():
                reward_name(f"{name}.{key}", key)
                pairs.append((str(key), weight(f"{name}.{key}", item)))
            return tuple(sorted(pairs))
        if isinstance(value, list | tuple) and all(
            isinstance(p, list | tuple) and len(p) == 2 for p in value
        ):
            return self(name, dict(value))
        raise ConfigError(name, f"expected a reward name or {{name: weight}}, got {value!r}")

    def allowed(self) -> str:
        return "a registered reward, or {name: weight > 0}"


@dataclasses.dataclass(frozen=True)
class RewardOptions(Check):
    """{reward name: {option: scalar}}, e.g. a local model folder or a server URL; secret values
    are refused (treegrpo.secrets.check_options)."""

    def __call__(self, name: str, value: Any) -> dict[str, dict[str, Any]]:
        if not isinstance(value, Mapping):
            raise ConfigError(name, f"expected {{reward: {{option: value}}}}, got {value!r}")
        out: dict[str, dict[str, Any]] = {}
        for reward, options in value.items():
            where = f"{name}.{reward}"
            Choice(REWARD_NAMES)(where, reward)
            if not isinstance(options, Mapping):
                raise ConfigError(where, f"expected a mapping of options, got {options!r}")
            checked: dict[str, Any] = {}
            for key, option in options.items():
                Text()(where, key)
                if isinstance(option, str):
                    checked[key] = Text(max_chars=MAX_OPTION_CHARS)(f"{where}.{key}", option)
                elif isinstance(option, bool | int | float) or option is None:
                    checked[key] = option
                else:
                    raise ConfigError(
                        f"{where}.{key}", f"expected a string or number, got {option!r}"
                    )
            check_options(where, checked)
            out[str(reward)] = checked
        return out

    def allowed(self) -> str:
        return "{reward: {option: string or number}} for rewards the run uses"


@dataclasses.dataclass(frozen=True)
class Trackers(Check):
    """A list of tracker names (one name alone is a list of one), without repeats."""

    def __call__(self, name: str, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(
                name, f"expected a list of trackers ({', '.join(TRACKERS)}), got {value!r}"
            )
        tracker = Choice(TRACKERS)
        return tuple(dict.fromkeys(tracker(f"{name}[{i}]", v) for i, v in enumerate(value)))

    def allowed(self) -> str:
        return "a list of " + " | ".join(TRACKERS)


def missing_tracker_packages(trackers: Iterable[str]) -> list[ConfigError]:
    """A ConfigError for each tracker whose package is not installed here (found without
    importing it, so this stays torch-free and fast: the API checks at submit)."""
    out = []
    for tracker in trackers:
        module = TRACKER_PACKAGES[tracker]
        if importlib.util.find_spec(module) is None:
            out.append(
                ConfigError(
                    "trackers",
                    f"tracker {tracker!r} needs the {module} package, which is not installed: "
                    f"pip install 'treegrpo-studio[{tracker}]'",
                )
            )
    return out
