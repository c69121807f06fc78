"""At submit: a config's `prompts` / `eval_prompts: {dataset: NAME_OR_ID, split}` are pinned to
the dataset's content hash, and the run's rewards are checked for the metadata they need.

    config, dataset_ids = pin_datasets(session, config)

A name means its newest version; the frozen config keeps `sha256`, so the worker reads exactly
this version (and refuses another). A reward that declares required metadata keys
(treegrpo/rewards/names.py REQUIRED_METADATA) is a 422 naming the key when the training prompts
lack that column, here and not mid-run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy.orm import Session

from backend import crud
from backend.api.problems import validation_error
from backend.errors import NotFound
from treegrpo.config import RunConfig
from treegrpo.datasets import DatasetRef
from treegrpo.rewards.names import missing_metadata

FIELDS = ("prompts", "eval_prompts")


def pin_datasets(session: Session, config: RunConfig) -> tuple[RunConfig, list[int]]:
    """The config with every dataset reference pinned, and the dataset ids it reads."""
    pinned: dict[str, Any] = {}
    ids: list[int] = []
    columns: dict[str, list[str]] = {}
    for field in FIELDS:
        ref = getattr(config, field)
        if not isinstance(ref, DatasetRef):
            continue
        loc = ("body", "config", f"{field}.dataset")
        try:
            row = crud.find_dataset(session, name_or_id=ref.dataset)
        except NotFound:
            raise validation_error(
                loc, f"no dataset {ref.dataset!r} (GET /api/v1/datasets lists them)", "not_found"
            ) from None
        if ref.sha256 is not None and ref.sha256 != row.sha256:
            raise validation_error(
                ("body", "config", f"{field}.sha256"),
                f"dataset {ref.dataset!r} is version {row.sha256[:12]}, not {ref.sha256[:12]}",
                "dataset_version",
            )
        if ref.split not in row.splits:
            raise validation_error(
                ("body", "config", f"{field}.split"),
                f"dataset {row.name} has no split {ref.split!r} "
                f"(splits: {', '.join(sorted(row.splits))})",
                "not_found",
            )
        pinned[field] = DatasetRef(row.name, ref.split, row.sha256)
        columns[field] = list(row.columns)
        ids.append(row.id)
    _check_metadata(config, columns.get("prompts", []), "prompts")
    if isinstance(config.eval_prompts, DatasetRef):
        _check_metadata(config, columns.get("eval_prompts", []), "eval_prompts")
    return (dataclasses.replace(config, **pinned) if pinned else config), ids


def _check_metadata(config: RunConfig, columns: list[str], field: str) -> None:
    missing = missing_metadata(config.reward_weights, columns)
    if missing:
        reward, key = missing[0]
        where = (
            f"dataset {getattr(config, field).dataset!r}"
            if isinstance(getattr(config, field), DatasetRef)
            else "inline or named prompts (which carry no metadata)"
        )
        raise validation_error(
            ("body", "config", field),
            f"reward {reward!r} needs the metadata key {key!r} in every prompt's row; "
            f"{where} has no such column",
            "missing_metadata",
        )
