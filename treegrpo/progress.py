"""A tqdm progress bar over epochs, as a trainer callback."""

from __future__ import annotations

from tqdm import tqdm

from treegrpo.callbacks import Callback, RunInfo


class ProgressBar(Callback):
    def __init__(self, disable: bool = False) -> None:
        self.disable = disable
        self.bar: tqdm | None = None

    def on_start(self, info: RunInfo) -> None:
        self.bar = tqdm(
            total=info.epochs,
            initial=info.start_epoch,
            desc=info.algorithm,
            unit="epoch",
            disable=self.disable,
            dynamic_ncols=True,
        )

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.bar is None or epoch == 0:
            return
        self.bar.update(epoch - self.bar.n)
        self.bar.set_postfix(
            reward=f"{metrics.get('reward_mean', float('nan')):.4f}",
            loss=f"{metrics.get('loss', float('nan')):.2e}",
        )

    def on_log(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
