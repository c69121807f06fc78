"""An experiment's grid: a base config plus axes, expanded into named, grouped runs. Torch-free.

An axis is a setting path (`algorithm`, `seed`, `tree.k`, `train.lr`, ...) or `preset` (a run
starts from that preset instead of the base one: the four methods at their authors' recipes are
`{"preset": ["digits-treegrpo", "digits-dancegrpo", ...]}`) with the values it takes. The grid is
their product, in axis order; `seed` is the replicate axis, so the runs that differ only in their
seed form one group (one cell of the statistics).

    cells = expand_grid({"preset": ["digits-treegrpo", "digits-mixgrpo"], "seed": [0, 1]})
    [c.name for c in cells]  # ['digits-treegrpo seed=0', 'digits-treegrpo seed=1', ...]
    [c.group for c in cells]  # ['digits-treegrpo', 'digits-treegrpo', 'digits-mixgrpo', ...]
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from treegrpo.errors import ConfigError

PRESET_AXIS = "preset"
SEED_AXIS = "seed"
MAX_GRID_RUNS = 256  # a grid larger than this is almost certainly a typo in an axis


@dataclass(frozen=True)
class GridCell:
    """One run of the grid: its name, its group (the name without the seed) and its overrides."""

    name: str
    group: str
    preset: str | None
    seed: int | None
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted path -> value


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def expand_grid(
    axes: Mapping[str, Sequence[Any]], base_preset: str | None = None
) -> list[GridCell]:
    """Every combination of the axes' values (the first axis varies slowest)."""
    if not axes:
        raise ConfigError("axes", "an experiment needs at least one axis")
    for path, values in axes.items():
        if not isinstance(values, Sequence) or isinstance(values, str) or not values:
            raise ConfigError(f"axes.{path}", "expected a non-empty list of values")
        labels = [_label(v) for v in values]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"axes.{path}", f"repeated value in {labels}")
    if SEED_AXIS in axes and not all(
        isinstance(v, int) and not isinstance(v, bool) for v in axes[SEED_AXIS]
    ):
        raise ConfigError(f"axes.{SEED_AXIS}", "seeds must be integers")
    total = 1
    for values in axes.values():
        total *= len(values)
    if total > MAX_GRID_RUNS:
        raise ConfigError("axes", f"the grid has {total} runs; at most {MAX_GRID_RUNS}")
    paths = list(axes)
    cells = []
    for combo in itertools.product(*(axes[p] for p in paths)):
        chosen = dict(zip(paths, combo, strict=True))
        preset = chosen.pop(PRESET_AXIS, base_preset)
        seed = chosen.get(SEED_AXIS)
        group_parts = [
            _label(v) if p == PRESET_AXIS else f"{p}={_label(v)}"
            for p, v in zip(paths, combo, strict=True)
            if p != SEED_AXIS
        ]
        group = " ".join(group_parts) or (base_preset or "base")
        name = group if seed is None else f"{group} seed={seed}"
        cells.append(GridCell(name=name, group=group, preset=preset, seed=seed, overrides=chosen))
    return cells


# Named experiments (POST /experiments {"experiment_preset": name}; `treegrpo experiment create
# --experiment-preset NAME`): the digits reproduction of docs/BENCHMARKS.md, one per claim.
DIGITS_METHODS = ["digits-treegrpo", "digits-dancegrpo", "digits-flowgrpo", "digits-mixgrpo"]
EXPERIMENT_PRESETS: dict[str, dict[str, Any]] = {
    "digits-methods": {
        "preset": "digits-treegrpo",
        "axes": {PRESET_AXIS: DIGITS_METHODS, SEED_AXIS: [0, 1, 2]},
        "budget": {"seconds": 60},
    },
    "digits-k": {
        "preset": "digits-treegrpo",
        "axes": {"tree.k": [2, 3, 4], SEED_AXIS: [0, 1, 2]},
        "budget": {"seconds": 60},
    },
    "digits-window": {
        "preset": "digits-treegrpo",
        "axes": {"tree.window": ["random", "shift", "fixed"], SEED_AXIS: [0, 1, 2]},
        "budget": {"seconds": 60},
    },
    "digits-backup": {
        "preset": "digits-treegrpo",
        "axes": {"tree.backup": ["mean", "logprob_softmax", "depth_norm"], SEED_AXIS: [0, 1, 2]},
        "budget": {"seconds": 60},
    },
    "digits-matched": {
        "preset": "digits-treegrpo",
        "axes": {
            PRESET_AXIS: [
                "digits-treegrpo",
                "digits-dancegrpo",
                "digits-dancegrpo-matched",
                "digits-flowgrpo-matched",
                "digits-mixgrpo-matched",
            ],
            SEED_AXIS: [0, 1, 2],
        },
        "budget": {"seconds": 60},
    },
    "digits-lora": {
        "preset": "digits-treegrpo",
        "axes": {"train.lora_rank": [4, 16], "train.lr": [1e-4, 1e-3], SEED_AXIS: [0]},
        "budget": {"seconds": 60},
    },
}
