"""The policy optimizer: AdamW, optionally fused, optionally on float32 master weights.

With `train.weights_dtype: bfloat16` the denoiser's trainable weights are stored in bf16 (half
the memory and no per-call casts under autocast), while `MasterWeightAdamW` keeps float32 master
copies and float32 moments: each step pulls the bf16 gradients into the masters, updates them,
and writes the rounded result back. Small updates (lr 1e-5 on weights of size ~1e-2) are below
bf16's resolution, so without masters they would vanish; with them they accumulate.

    optimizer = build_optimizer(params, train_config, device)
    ...backward...
    clip_grad_norm_(clip_targets(optimizer, params), max_norm)
    optimizer.step()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from treegrpo.config import TrainConfig

WEIGHT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class MasterWeightAdamW(torch.optim.AdamW):
    """AdamW on float32 master copies of low-precision model parameters."""

    def __init__(self, params: Iterable[nn.Parameter], **kwargs: Any) -> None:
        self.model_params = list(params)
        masters = [p.detach().float().clone() for p in self.model_params]
        super().__init__(masters, **kwargs)
        self.masters = masters

    def pull_grads(self) -> list[Tensor]:
        """The model's gradients into the masters, in float32; returns the masters (to clip)."""
        for param, master in zip(self.model_params, self.masters, strict=True):
            master.grad = None if param.grad is None else param.grad.float()
        return self.masters

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        if any(m.grad is None for m in self.masters):
            self.pull_grads()
        loss = super().step(closure)
        for param, master in zip(self.model_params, self.masters, strict=True):
            param.copy_(master)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for param in self.model_params:
            param.grad = None

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        # The masters are the weights' full precision: without them a resume would restart from
        # the rounded bf16 values and drift from an uninterrupted run.
        state["master_weights"] = [m.detach().clone() for m in self.masters]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        masters = state.pop("master_weights", None)
        super().load_state_dict(state)
        if masters is not None:
            with torch.no_grad():
                for param, master, saved in zip(
                    self.model_params, self.masters, masters, strict=True
                ):
                    master.copy_(saved)
                    param.copy_(saved)


def store_weights(params: Sequence[nn.Parameter], dtype: str) -> None:
    """Keep the trainable weights in `dtype` (train.weights_dtype)."""
    target = WEIGHT_DTYPES[dtype]
    for param in params:
        param.data = param.data.to(target)


def build_optimizer(
    params: Sequence[nn.Parameter], train: TrainConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW with the run's lr and weight decay: fused where asked (null: on CUDA), on float32
    masters when the weights are (or, by train.weights_dtype, will be) stored in a lower
    precision. Build it before `store_weights`, so the masters start from the full values."""
    fused = train.fused_adamw if train.fused_adamw is not None else device.type == "cuda"
    kwargs: dict[str, Any] = {
        "lr": train.effective_lr,
        "weight_decay": train.weight_decay,
        "fused": fused,
    }
    if train.weights_dtype != "float32" or any(p.dtype != torch.float32 for p in params):
        return MasterWeightAdamW(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def clip_targets(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> list[Tensor]:
    """What the gradient-norm clip acts on: the float32 masters' gradients when there are any."""
    if isinstance(optimizer, MasterWeightAdamW):
        return optimizer.pull_grads()
    return list(params)
