"""TensorBoard: event files in the run folder, readable offline (`tensorboard --logdir DIR`).

Scalars: every metric of every epoch, at step = epoch. Images: the held-out gallery at gallery
epochs, as one `gallery` image batch (its first GALLERY_IMAGES images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from treegrpo.callbacks import Callback, RunInfo, SampleBatch

GALLERY_IMAGES = 16


class TensorBoardTracker(Callback):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.writer: Any = None

    def _writer(self) -> Any:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.folder.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(log_dir=str(self.folder), flush_secs=5)
        return self.writer

    def on_start(self, info: RunInfo) -> None:
        self._writer().add_text("config", f"```\n{info.config}\n```", info.start_epoch)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        writer = self._writer()
        for name, value in metrics.items():
            writer.add_scalar(name, float(value), epoch)
        writer.flush()

    def on_samples(self, batch: SampleBatch) -> None:
        images = batch.images[:GALLERY_IMAGES].detach().float().clamp(0, 1).cpu()  # (B, C, H, W)
        self._writer().add_images("gallery", images, batch.epoch, dataformats="NCHW")

    def on_end(self, status: str, epoch: int) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
