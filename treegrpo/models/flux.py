"""FLUX.1-family adapter: a diffusers `FluxTransformer2DModel` (flow matching) on 2x2-packed
latents, conditioned on T5 token states, a pooled CLIP embedding and, for guidance-distilled
models (FLUX.1-dev), a guidance embedding.

The rollout, the SDE steps and the checkpoints see ordinary (C, H, W) latents; packing into
(H/2 * W/2) tokens of 4C channels happens inside `denoise`, exactly as diffusers' FluxPipeline
packs them (`_pack_latents`, `_prepare_latent_image_ids`), so the trainer's ODE sample equals the
pipeline's for the same latents. The step grid follows FluxPipeline too: base sigmas
linspace(1, 1/T, T) shifted dynamically with mu from the image's token count.

Guidance: `guidance` is the distilled guidance scale fed to the embedding (FluxPipeline's
`guidance_scale`, 3.5 for dev); true classifier-free guidance (`sampling.cfg_scale` > 1, a
second call on the empty prompt) is off by default on a guidance-distilled model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from treegrpo.config import DEFAULT_CFG_SCALE
from treegrpo.grids import Grid, build_schedule
from treegrpo.models.base import Conditioning
from treegrpo.models.diffusers_adapter import DiffusersAdapter
from treegrpo.schedules import FlowSDE, Schedule

# (T5 token states (B, L, D), pooled CLIP (B, P)) for a batch of prompts.
TextEncoderFn = Callable[[Sequence[str]], tuple[Tensor, Tensor]]
DecoderFn = Callable[[Tensor], Tensor]

# FluxPipeline.__call__'s default `guidance_scale`, the value FLUX.1-dev is run with.
DEFAULT_GUIDANCE = 3.5
# Flow-GRPO's FLUX LoRA targets (flow_grpo scripts/train_flux.py, 74db6919, `target_modules`):
# the attention projections of both streams and the double blocks' feed-forwards. peft matches
# by suffix, so the single blocks' to_q/k/v carry adapters too.
LORA_TARGETS = (
    "to_k",
    "to_q",
    "to_v",
    "to_out.0",
    "add_k_proj",
    "add_q_proj",
    "add_v_proj",
    "to_add_out",
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
)


def pack_latents(latents: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): 2x2 patches as tokens (FluxPipeline._pack_latents)."""
    b, c, h, w = latents.shape
    patches = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: Tensor, height: int, width: int) -> Tensor:
    """(B, H/2 * W/2, 4C) -> (B, C, H, W) for latent `height` x `width`; inverse of pack."""
    b, _, channels = tokens.shape
    patches = tokens.view(b, height // 2, width // 2, channels // 4, 2, 2)
    return patches.permute(0, 3, 1, 4, 2, 5).reshape(b, channels // 4, height, width)


def latent_image_ids(height: int, width: int) -> Tensor:
    """(H/2 * W/2, 3) RoPE positions of the packed tokens: (0, row, column)."""
    ids = torch.zeros(height // 2, width // 2, 3)
    ids[..., 1] += torch.arange(height // 2)[:, None]
    ids[..., 2] += torch.arange(width // 2)[None, :]
    return ids.reshape(-1, 3)


class FluxAdapter(DiffusersAdapter):
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
        scheduler_config: dict[str, Any] | None = None,
        guidance: float | None = None,
        dtype: torch.dtype = torch.float32,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        _, height, width = latent_shape
        if height % 2 or width % 2:
            raise ValueError(f"FLUX packs 2x2 patches: latent size {height}x{width} must be even")
        embeds_guidance = bool(transformer.config["guidance_embeds"])  # type: ignore[index]
        if guidance is not None and not embeds_guidance:
            raise ValueError(
                "sampling.guidance applies to guidance-distilled FLUX models (guidance_embeds "
                "true, e.g. FLUX.1-dev); this transformer has no guidance embedding: use "
                "sampling.cfg_scale"
            )
        self.name = name
        self.family = "flow"
        self.denoiser = transformer
        self.encode_text = encode_text
        self.decode_fn = decode
        self.latent_shape = latent_shape
        self.device = device
        self.dtype = dtype
        self.scheduler_config = scheduler_config
        self.autocast_dtype = autocast_dtype
        self.guidance = (guidance or DEFAULT_GUIDANCE) if embeds_guidance else None
        # A guidance-distilled model samples with one call per step (FluxPipeline's
        # true_cfg_scale is 1 by default); others keep the generic CFG default.
        self.default_cfg_scale = 1.0 if embeds_guidance else DEFAULT_CFG_SCALE
        self.image_ids = latent_image_ids(height, width).to(device)

    def image_seq_len(self) -> int | None:
        return (self.latent_shape[1] // 2) * (self.latent_shape[2] // 2)

    def make_schedule(
        self, steps: int, grid: Grid = "model", sde: FlowSDE = "flowgrpo"
    ) -> Schedule:
        """FluxPipeline's grid: linspace(1, 1/T, T) base sigmas (unless the scheduler makes its
        own flow sigmas), shifted with mu of this image size."""
        config = self.scheduler_config or {}
        base = None
        if not config.get("use_flow_sigmas", False):
            base = np.linspace(1.0, 1.0 / steps, steps).tolist()
        return build_schedule(
            "flow", self.scheduler_config, steps, grid, sde, self.image_seq_len(), base
        )

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        tokens, pooled = self.encode_text(prompts)
        tensors = {
            "encoder_hidden_states": tokens.to(self.device, self.dtype),
            "pooled_projections": pooled.to(self.device, self.dtype),
        }
        if self.guidance is not None:
            # One row per prompt, so it is selected, expanded and concatenated with the rest.
            tensors["guidance"] = torch.full((len(prompts),), self.guidance, device=self.device)
        return Conditioning(tensors)

    def denoise(
        self, x: Tensor, timesteps: Tensor, cond: Conditioning, denoiser: nn.Module | None = None
    ) -> Tensor:
        module = denoiser if denoiser is not None else self.denoiser
        _, _, height, width = x.shape
        states = cond.tensors["encoder_hidden_states"]
        out: Tensor = module(
            hidden_states=pack_latents(x),
            # FluxPipeline feeds t / 1000 in the latents' dtype; the model scales it back.
            timestep=timesteps.to(x.dtype) / 1000,
            guidance=cond.tensors.get("guidance"),
            pooled_projections=cond.tensors["pooled_projections"],
            encoder_hidden_states=states,
            txt_ids=states.new_zeros(states.shape[1], 3),
            img_ids=self.image_ids.to(states.dtype),
            return_dict=False,
        )[0]
        return unpack_latents(out, height, width)
