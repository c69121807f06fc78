"""One module per algorithm; `get_algorithm(name)` is what the trainer asks for."""

from __future__ import annotations

from treegrpo.algorithm_names import ALGORITHMS
from treegrpo.algorithms.base import Algorithm
from treegrpo.algorithms.dancegrpo import DanceGRPO
from treegrpo.algorithms.flowgrpo import FlowGRPO
from treegrpo.algorithms.mixgrpo import MixGRPO
from treegrpo.algorithms.treegrpo import TreeGRPO
from treegrpo.config import RunConfig
from treegrpo.models.base import ModelAdapter
from treegrpo.schedules import Schedule

ALGORITHM_CLASSES: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (TreeGRPO, DanceGRPO, FlowGRPO, MixGRPO)
}


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHM_CLASSES:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHM_CLASSES)}")
    return ALGORITHM_CLASSES[name]()


def resolve_for_model(config: RunConfig, adapter: ModelAdapter) -> tuple[RunConfig, Schedule]:
    """`config` with the algorithm's defaults filled in for this model, and the schedule it
    samples with (the model's grid, the resolved SDE)."""
    resolved = get_algorithm(config.algorithm).resolve(
        config, adapter.family, adapter.default_cfg_scale
    )
    sampling = resolved.sampling
    assert sampling.sde is not None
    schedule = adapter.make_schedule(sampling.steps, sampling.grid, sampling.sde)
    return resolved, schedule


# The config validates algorithm names torch-free from treegrpo.algorithm_names; both must agree.
assert set(ALGORITHM_CLASSES) == set(ALGORITHMS), (sorted(ALGORITHM_CLASSES), ALGORITHMS)
