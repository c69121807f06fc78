"""How deep a request's free-form JSON (a job's config and params) may nest.

Configs are a few levels deep; JSON nested hundreds of levels only exhausts Python's recursion
limit somewhere in validation, which used to answer 500 with thousands of traceback lines in the
log. It is refused here first, as a 422 naming the field, by a walk that does not recurse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backend.api.problems import validation_error
from backend.experiment_schemas import ExperimentCreate
from backend.schemas import JobCreate

MAX_DEPTH = 32


def depth_beyond(value: Any, limit: int) -> tuple[str | int, ...] | None:
    """The path of the first container nested deeper than `limit` levels, or None."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, Mapping):
            children: Any = ((str(key), child) for key, child in item.items())
        elif isinstance(item, list | tuple):
            children = enumerate(item)
        else:
            continue
        if len(path) >= limit:
            return path
        stack.extend((child, (*path, key)) for key, child in children)
    return None


def check_depth(value: Any, loc: tuple[str, ...], limit: int = MAX_DEPTH) -> None:
    too_deep = depth_beyond(value, limit)
    if too_deep is not None:
        shown = ".".join(str(part) for part in too_deep[:4])
        raise validation_error(
            loc,
            f"nested more than {limit} levels deep (at {shown}...); a config is a few levels deep",
            "too_deep",
        )


def check_experiment_request(body: ExperimentCreate) -> None:
    """POST /experiments: the base config and the axes' values."""
    check_depth(body.config, ("body", "config"))
    check_depth(body.axes, ("body", "axes"))


def check_job_request(body: JobCreate) -> None:
    """POST /jobs: the config and the params."""
    check_depth(body.config, ("body", "config"))
    check_depth(body.params, ("body", "params"))
