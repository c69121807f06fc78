"""peft LoRA on a diffusers denoiser: freeze the base, train low-rank adapters in float32."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def add_lora(
    module: nn.Module, rank: int, targets: Sequence[str], base_dtype: torch.dtype | None
) -> None:
    """Adapters of rank `rank` (alpha = rank) on the named projections of `module`.

    With mixed precision (`base_dtype` = the autocast dtype) the frozen base is stored in that
    dtype: its matmuls run there under autocast anyway, and it halves the base's memory.
    """
    from peft import LoraConfig

    if base_dtype is not None:
        # torch's own `to`: diffusers' override warns about float32-pinned modules even when a
        # model has none, as SD3's transformer and the SD1.5 UNet do.
        nn.Module.to(module, base_dtype)
    module.requires_grad_(False)
    module.add_adapter(  # type: ignore[operator]
        LoraConfig(
            r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(targets)
        )
    )
    # peft creates the adapters in the base's dtype; they train with float32 weights.
    for param in module.parameters():
        if param.requires_grad:
            param.data = param.data.float()
