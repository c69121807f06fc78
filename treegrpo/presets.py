"""Named starting points for runs. Torch-free: a preset is a dict of config overrides.

`tiny-*` run in seconds on the random-init test model; `digits-*` use the shipped digits model.
Each baseline preset matches its TreeGRPO sibling on prompts, reward, lr, steps and images per
prompt per epoch (flat.group_size = k^d), so comparisons between them are fair.
"""

from __future__ import annotations

from typing import Any

from treegrpo.config import ConfigError

_TINY: dict[str, Any] = {
    "model": "tiny-random",
    "reward": "brightness",
    "prompts": "tiny",
    "prompts_per_epoch": 2,
    "epochs": 2,
    "sampling": {"steps": 6, "cfg_scale": 2.0, "eta": 0.7},
    "tree": {"k": 2, "depth": 2, "window": "random"},
    "flat": {"group_size": 4, "window": 2},
    "train": {"lr": 1e-3, "clip_range": 0.2, "minibatches": 2},
}

_DIGITS: dict[str, Any] = {
    "model": "digits",
    "reward": "brightness",
    "prompts": "digits",
    "prompts_per_epoch": 4,
    "epochs": 60,
    "checkpoint_every": 10,
    "log_tree_every": 10,
    "sample_every": 10,
    "sampling": {"steps": 10, "cfg_scale": 3.0, "eta": 0.7},
    "tree": {"k": 3, "depth": 3, "window": "random"},
    "flat": {"group_size": 27, "window": 3},
    "train": {"lr": 1e-4, "clip_range": 0.2, "minibatches": 2},
}

_ALGORITHMS = ("treegrpo", "dancegrpo", "flowgrpo", "mixgrpo")

PRESETS: dict[str, dict[str, Any]] = {
    f"{family}-{algorithm}": {**base, "algorithm": algorithm}
    for family, base in (("tiny", _TINY), ("digits", _DIGITS))
    for algorithm in _ALGORITHMS
}


def preset_dict(name: str) -> dict[str, Any]:
    """A deep copy of a preset's overrides; unknown names raise ConfigError."""
    import copy

    if name not in PRESETS:
        raise ConfigError("preset", f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])
