"""SD3-style adapter: a diffusers `SD3Transformer2DModel` (MMDiT, flow matching) conditioned on
token states plus a pooled embedding, with any text encoder and any decoder.

The shipped digits model (MiniLM text encoder, pixel decoder) and SD3 / SD3.5 folders (CLIP-L,
CLIP-G and T5 encoders, VAE decoder) share this class, so the product's code path is the same
for both. `family="epsilon"` reuses the transformer as a noise predictor with DDIM steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from treegrpo.models.base import Conditioning
from treegrpo.models.diffusers_adapter import DiffusersAdapter
from treegrpo.schedules import Family

# (token states (B, L, D), pooled (B, P)) for a batch of prompts.
TextEncoderFn = Callable[[Sequence[str]], tuple[Tensor, Tensor]]
DecoderFn = Callable[[Tensor], Tensor]

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj")


class SD3StyleAdapter(DiffusersAdapter):
    lora_targets = LORA_TARGETS
    export_prefix = "transformer"

    def __init__(
        self,
        name: str,
        transformer: nn.Module,
        encode_text: TextEncoderFn,
        decode: DecoderFn,
        latent_shape: tuple[int, ...],
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        family: Family = "flow",
        scheduler_config: dict[str, Any] | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.name = name
        self.family = family
        self.denoiser = transformer
        self.encode_text = encode_text
        self.decode_fn = decode
        self.latent_shape = latent_shape
        self.device = device
        self.dtype = dtype
        self.scheduler_config = scheduler_config
        self.autocast_dtype = autocast_dtype

    def image_seq_len(self) -> int | None:
        patch = int(getattr(self.denoiser, "config", {}).get("patch_size", 1))
        return (self.latent_shape[-2] // patch) * (self.latent_shape[-1] // patch)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        tokens, pooled = self.encode_text(prompts)
        return Conditioning(
            {
                "encoder_hidden_states": tokens.to(self.device, self.dtype),
                "pooled_projections": pooled.to(self.device, self.dtype),
            }
        )

    def denoise(
        self, x: Tensor, timesteps: Tensor, cond: Conditioning, denoiser: nn.Module | None = None
    ) -> Tensor:
        module = denoiser if denoiser is not None else self.denoiser
        out: Tensor = module(
            hidden_states=x,
            timestep=timesteps,
            encoder_hidden_states=cond.tensors["encoder_hidden_states"],
            pooled_projections=cond.tensors["pooled_projections"],
            return_dict=False,
        )[0]
        return out
