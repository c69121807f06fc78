"""Trainer callbacks: how progress, artifacts and stop requests leave and enter the core.

The core never reads the environment or a database; the workers pass callbacks that write to
theirs. `CallbackList` fans one event out to many. The built-ins here serve the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from treegrpo.tree_record import TreeRecord


@dataclass
class RunInfo:
    """Derived quantities, computed once and reported at start."""

    algorithm: str
    start_epoch: int
    epochs: int
    images_per_epoch: int
    trained_edges_per_epoch: int
    model_evals_per_epoch: int
    config: dict[str, Any]


@dataclass
class SampleBatch:
    """A gallery: ODE samples of the evaluation prompts from fixed noise."""

    epoch: int
    prompts: list[str]
    images: Tensor  # (B, C, H, W) in [0, 1]
    rewards: dict[str, Tensor]  # name -> (B,)


class Callback:
    """No-op base; override what you need."""

    def on_start(self, info: RunInfo) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def on_tree(self, epoch: int, record: TreeRecord) -> None: ...

    def on_samples(self, batch: SampleBatch) -> None: ...

    def on_checkpoint(self, epoch: int, path: Path) -> None: ...

    def on_log(self, message: str) -> None: ...

    def on_end(self, status: str, epoch: int) -> None: ...

    def should_stop(self) -> bool:
        return False


class CallbackList(Callback):
    def __init__(self, callbacks: Sequence[Callback] = ()) -> None:
        self.callbacks = list(callbacks)

    def on_start(self, info: RunInfo) -> None:
        for cb in self.callbacks:
            cb.on_start(info)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, metrics)

    def on_tree(self, epoch: int, record: TreeRecord) -> None:
        for cb in self.callbacks:
            cb.on_tree(epoch, record)

    def on_samples(self, batch: SampleBatch) -> None:
        for cb in self.callbacks:
            cb.on_samples(batch)

    def on_checkpoint(self, epoch: int, path: Path) -> None:
        for cb in self.callbacks:
            cb.on_checkpoint(epoch, path)

    def on_log(self, message: str) -> None:
        for cb in self.callbacks:
            cb.on_log(message)

    def on_end(self, status: str, epoch: int) -> None:
        for cb in self.callbacks:
            cb.on_end(status, epoch)

    def should_stop(self) -> bool:
        return any(cb.should_stop() for cb in self.callbacks)


class JsonlMetrics(Callback):
    """Appends one JSON line per epoch: {"epoch": E, "metrics": {...}}."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({"epoch": epoch, "metrics": metrics}) + "\n")


def truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drop lines past `last_epoch`, so a resumed run neither duplicates nor skips epochs."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["epoch"] <= last_epoch
    ]
    path.write_text("".join(line + "\n" for line in kept))


class ArtifactWriter(Callback):
    """Writes logged trees and sample galleries under a folder (trees/, samples/)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.first_samples: SampleBatch | None = None

    def on_tree(self, epoch: int, record: TreeRecord) -> None:
        from treegrpo.artifacts import write_tree

        write_tree(record, self.root / "trees" / f"epoch-{epoch:06d}-tree-{record.index:03d}")

    def on_samples(self, batch: SampleBatch) -> None:
        from treegrpo.artifacts import write_samples

        write_samples(batch, self.root / "samples" / f"epoch-{batch.epoch:06d}")
        # The first gallery of this process is the baseline (epoch 0, or the resumed epoch).
        if self.first_samples is None:
            self.first_samples = batch
        elif batch.epoch > self.first_samples.epoch:
            from treegrpo.artifacts import before_after_grid

            before_after_grid(self.first_samples, batch).save(self.root / "before_after.png")


class StopFile(Callback):
    """Requests a clean stop when a file appears (e.g. `touch DIR/STOP`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def should_stop(self) -> bool:
        return self.path.exists()
