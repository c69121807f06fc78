"""SD1.5-family adapter: a diffusers `UNet2DConditionModel` predicting noise (epsilon), conditioned
on CLIP token states, sampled with DDIM steps on the model's own training noise schedule.

The adapter takes its text encoder and decoder as callables, like `SD3StyleAdapter`; loading a
local folder into one lives in `treegrpo.models.local`. Its DDIM grid comes from the folder's
scheduler config (any scheduler class: SD1.5 ships PNDM's), read as DDIMScheduler's
(`treegrpo.grids`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from treegrpo.models.base import Conditioning
from treegrpo.models.diffusers_adapter import DiffusersAdapter
from treegrpo.schedules import Family

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

# Token states (B, L, D) for a batch of prompts; SD1.5 has no pooled embedding.
TokenEncoderFn = Callable[[Sequence[str]], Tensor]
DecoderFn = Callable[[Tensor], Tensor]


class SD15Adapter(DiffusersAdapter):
    """UNet epsilon-prediction model with DDIM steps. The UNet is the policy; text encoder and
    decoder are frozen callables. With `autocast_dtype` set, the UNet keeps float32 master
    weights and its forward runs under autocast in that dtype."""

    family: Family = "epsilon"
    # Every attention of the UNet (self- and cross-attention in each transformer block).
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")
    export_prefix = "unet"

    def __init__(
        self,
        name: str,
        unet: UNet2DConditionModel,
        encode_text: TokenEncoderFn,
        decode: DecoderFn,
        latent_shape: tuple[int, ...],
        device: torch.device,
        scheduler_config: dict[str, Any] | None = None,
        dtype: torch.dtype = torch.float32,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.name = name
        self.denoiser = unet
        self.encode_text = encode_text
        self.decode_fn = decode
        self.latent_shape = latent_shape
        self.device = device
        self.dtype = dtype
        self.autocast_dtype = autocast_dtype
        self.scheduler_config = scheduler_config

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        tokens = self.encode_text(prompts)  # (B, L, D)
        return Conditioning({"encoder_hidden_states": tokens.to(self.device, self.dtype)})

    def denoise(
        self, x: Tensor, timesteps: Tensor, cond: Conditioning, denoiser: nn.Module | None = None
    ) -> Tensor:
        module = denoiser if denoiser is not None else self.denoiser
        out: Tensor = module(
            x,
            timesteps,
            encoder_hidden_states=cond.tensors["encoder_hidden_states"],
            return_dict=False,
        )[0]
        return out
