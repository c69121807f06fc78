"""Where a run's prompts come from, as rows: a named set, an inline list or a dataset split.

    source = open_prompts(config.prompts, datasets=Path("data/artifacts/datasets"))
    indices = draw(len(source), count, rng)       # the epoch's seeded draw
    rows = source.rows(indices)                   # [(prompt, metadata), ...]

`datasets` is the folder of stored versions (`<sha256>/`, the artifact store's `datasets/`);
a pinned reference (`sha256`) is read from there and checked, an unpinned one may name a
version folder itself (`treegrpo train` on one's own files).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from treegrpo.datasets.errors import DatasetError
from treegrpo.datasets.ref import DatasetRef
from treegrpo.datasets.table import open_split
from treegrpo.prompts import resolve_prompts

Rows = list[tuple[str, dict[str, Any]]]


class PromptSource(Protocol):
    def __len__(self) -> int: ...

    def rows(self, indices: Sequence[int]) -> Rows: ...


class InlinePrompts:
    """A named set or an inline list: no metadata."""

    def __init__(self, prompts: Sequence[str]) -> None:
        self.prompts = tuple(prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def rows(self, indices: Sequence[int]) -> Rows:
        return [(self.prompts[i], {}) for i in indices]


def dataset_folder(ref: DatasetRef, datasets: Path | None) -> Path:
    """The stored version a reference names."""
    if ref.sha256 is not None:
        if datasets is None:
            raise DatasetError(f"{ref.describe()}: no dataset folder was given to read it from")
        return datasets / ref.sha256
    folder = Path(ref.dataset).expanduser()
    if not folder.is_dir():
        raise DatasetError(
            f"{ref.describe()} is not pinned to a version: submit it through the studio (which "
            "pins it), or name a dataset version folder (one with manifest.json)"
        )
    return folder


def open_prompts(value: str | tuple[str, ...] | DatasetRef, datasets: Path | None) -> PromptSource:
    if isinstance(value, DatasetRef):
        return open_split(dataset_folder(value, datasets), value.split, value.sha256)
    return InlinePrompts(resolve_prompts(value))


def draw(total: int, count: int, rng: random.Random) -> list[int]:
    """`count` row indices out of `total`: without repeats when there are enough rows, else
    with. Only `rng` decides, so an epoch's draw replays exactly from (seed, epoch); the indices
    are those that `rng.sample(rows, count)` / `rng.choices(rows, k=count)` pick, so runs on
    inline lists draw what they drew before datasets existed."""
    if total <= 0:
        raise DatasetError("no prompts to draw from")
    if count <= total:
        return rng.sample(range(total), count)
    return rng.choices(range(total), k=count)


def first_rows(source: PromptSource, limit: int) -> Rows:
    """The first `limit` rows (galleries' held-out prompts)."""
    return source.rows(range(min(limit, len(source))))
