"""An exponential moving average (EMA) of the trained weights, as Flow-GRPO keeps one.

Flow-GRPO (flow_grpo/ema.py `EMAModuleWrapper`, used by scripts/train_sd3.py with decay 0.9 and
update_step_interval 8) updates the average after optimizer step n when (n + 1) is a multiple
of the interval, with the decay warmed up as min((1 + n) / (10 + n), decay):

    ema <- ema + (1 - decay_n) (theta - ema)

and samples its evaluations (and saves its LoRA) with the average swapped into the model. Here
the average is float32, keyed by parameter name like `checkpoint.trainable_state`, and saved in
every checkpoint (ema.safetensors), so a resumed run continues the same average; Flow-GRPO's
resume starts a fresh one from the loaded weights.

    ema = WeightsEMA(adapter.denoiser, decay=0.9, every=8)
    ema.step(optimizer_step)           # after each optimizer step
    with ema.swapped_in():             # sample with the averaged weights, then put them back
        ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

EMA_FILE = "ema.safetensors"


def ema_decay(step: int, decay: float) -> float:
    """The decay of optimizer step `step` (0-based): Flow-GRPO's warm-up, capped at `decay`."""
    return min((1 + step) / (10 + step), decay)


class WeightsEMA:
    """A float32 moving average of `module`'s trainable parameters."""

    def __init__(self, module: nn.Module, decay: float, every: int) -> None:
        self.params = {name: p for name, p in module.named_parameters() if p.requires_grad}
        self.decay = decay
        self.every = every
        self.average = {
            name: p.detach().to(torch.float32).clone() for name, p in self.params.items()
        }

    @torch.no_grad()
    def step(self, optimizer_step: int) -> bool:
        """Fold the current weights in after optimizer step `optimizer_step` (0-based), when it
        is an update step; returns whether it was."""
        if (optimizer_step + 1) % self.every:
            return False
        weight = 1.0 - ema_decay(optimizer_step, self.decay)
        for name, param in self.params.items():
            average = self.average[name]
            average.add_(param.detach().to(torch.float32) - average, alpha=weight)
        return True

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The average as CPU tensors by parameter name (the layout of trainable_state)."""
        return {name: t.to("cpu").contiguous() for name, t in self.average.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.average):
            missing = sorted(set(self.average) ^ set(state))
            raise ValueError(
                f"the checkpoint's EMA does not match the trained parameters, e.g. {missing[:3]}"
            )
        for name, tensor in state.items():
            self.average[name].copy_(tensor)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The module samples with the average inside the block; its own weights come back
        bit for bit afterwards."""
        kept = {name: p.detach().clone() for name, p in self.params.items()}
        try:
            with torch.no_grad():
                for name, param in self.params.items():
                    param.copy_(self.average[name])
            yield
        finally:
            with torch.no_grad():
                for name, param in self.params.items():
                    param.copy_(kept[name])
