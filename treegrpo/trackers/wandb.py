"""Weights & Biases, offline: the run is written under the run folder and never sent anywhere;
`wandb sync <run folder>/wandb/offline-run-*` uploads it later from a machine that may.

Metrics at step = epoch; the held-out gallery as images at gallery epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from treegrpo.callbacks import Callback, RunInfo, SampleBatch

GALLERY_IMAGES = 16


class WandbTracker(Callback):
    def __init__(self, run_dir: Path, project: str, name: str) -> None:
        self.folder = run_dir  # wandb writes its own wandb/ folder inside
        self.project = project
        self.name = name
        self.run: Any = None

    def on_start(self, info: RunInfo) -> None:
        import wandb

        self.folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.project,
            name=self.name,
            dir=str(self.folder),
            mode="offline",
            config=info.config,
            reinit="create_new",
            settings=wandb.Settings(
                silent=True, disable_git=True, x_disable_stats=True, console="off"
            ),
        )

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.run is not None:
            self.run.log({name: float(value) for name, value in metrics.items()}, step=epoch)

    def on_samples(self, batch: SampleBatch) -> None:
        if self.run is None:
            return
        import wandb

        images = batch.images[:GALLERY_IMAGES].detach().float().clamp(0, 1).cpu()
        pictures = [
            wandb.Image(image.permute(1, 2, 0).numpy(), caption=prompt)  # (H, W, C)
            for image, prompt in zip(images, batch.prompts, strict=False)
        ]
        self.run.log({"gallery": pictures}, step=batch.epoch)

    def on_end(self, status: str, epoch: int) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "completed" else 1)
            self.run = None
