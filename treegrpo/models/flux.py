"""FLUX.1 family: the `FluxAdapter` (a diffusers `FluxTransformer2DModel`, flow matching, on
2x2-packed latents, conditioned on T5 token states, a pooled CLIP embedding and, for
guidance-distilled models (FLUX.1-dev), a guidance embedding), and `load_flux`, which builds one
from a local FluxPipeline folder.

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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

import numpy as np
import torch
from torch import Tensor, nn

from treegrpo.config import DEFAULT_CFG_SCALE, ConfigError
from treegrpo.grids import Grid, build_schedule
from treegrpo.models.base import Conditioning
from treegrpo.models.diffusers_adapter import (
    AdapterOptions,
    DecoderFn,
    DiffusersAdapter,
    mixed_precision,
)
from treegrpo.models.folder import (
    Size,
    VaeDecoder,
    component_config,
    load_denoiser,
    load_frozen,
    load_tokenizer,
    require_class,
    require_components,
    scheduler_config,
    token_ids,
    vae_scale_factor,
)
from treegrpo.models.sizes import image_size as checked_image_size
from treegrpo.schedules import Family, FlowSDE, Schedule

if TYPE_CHECKING:
    from transformers import CLIPTextModel, PreTrainedTokenizerBase, T5EncoderModel

# (T5 token states (B, L, D), pooled CLIP (B, P)) for a batch of prompts.
TextEncoderFn = Callable[[Sequence[str]], tuple[Tensor, Tensor]]

# FluxPipeline.__call__'s default `guidance_scale`, the value FLUX.1-dev is run with.
DEFAULT_GUIDANCE = 3.5
T5_MAX_TOKENS = 512  # FluxPipeline's default max_sequence_length
DEFAULT_LATENT = 128  # FluxPipeline.default_sample_size: 1024 px with an 8x VAE
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


class FluxAdapter(DiffusersAdapter[tuple[Tensor, Tensor]]):
    family: Family = "flow"
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
        guidance: float | None = None,
        **options: Unpack[AdapterOptions],
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
        super().__init__(name, transformer, encode_text, decode, latent_shape, device, **options)
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


class FluxTextEncoder:
    """FLUX's conditioning, following diffusers' FluxPipeline.encode_prompt:

    pooled = CLIP pooler output (the end-of-text token's state)   (B, P)
    tokens = T5 last hidden states, 512 tokens                     (B, 512, D)
    """

    def __init__(
        self,
        clip: tuple[PreTrainedTokenizerBase, CLIPTextModel],
        t5: tuple[PreTrainedTokenizerBase, T5EncoderModel],
        device: torch.device,
        t5_tokens: int = T5_MAX_TOKENS,
    ) -> None:
        self.clip = clip
        self.t5 = t5
        self.device = device
        self.t5_tokens = t5_tokens
        # FluxPipeline pads CLIP to tokenizer.model_max_length (77), whatever the position table.
        self.clip_tokens = int(clip[0].model_max_length)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        tokenizer, encoder = self.clip
        pooled = encoder(token_ids(tokenizer, prompts, self.clip_tokens, self.device)).pooler_output
        tokenizer, t5 = self.t5
        states = t5(token_ids(tokenizer, prompts, self.t5_tokens, self.device))[0]
        return states.to(pooled.dtype), pooled  # (B, L, D), (B, P)


def load_flux(
    folder: Path,
    index: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
    name: str,
    size: Size = (None, None),
    guidance: float | None = None,
    empty: bool = False,
) -> FluxAdapter:
    """A FluxPipeline folder: CLIP and T5 encoders, the transformer and the VAE, their widths
    checked against each other; `guidance` only where the transformer embeds it."""
    # Imported here, not at the top: see treegrpo.models.folder.
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    required = ["transformer", "vae", "scheduler", "text_encoder", "tokenizer"]
    require_components(folder, index, [*required, "text_encoder_2", "tokenizer_2"])
    dit = component_config(folder, "transformer")
    require_class(folder, "transformer", dit, "FluxTransformer2DModel")
    scale = vae_scale_factor(component_config(folder, "vae"))
    height, width = checked_image_size(
        size,
        (DEFAULT_LATENT * scale, DEFAULT_LATENT * scale),
        scale * 2,
        f"the VAE's {scale}x times FLUX's 2x2 packing",
    )
    if guidance is not None and not dit.get("guidance_embeds", False):
        raise ConfigError(
            "sampling.guidance",
            "this FLUX transformer has no guidance embedding (guidance_embeds false, as "
            "FLUX.1-schnell): leave sampling.guidance null",
        )

    transformer = load_denoiser(FluxTransformer2DModel, folder, "transformer", device, empty)
    clip = (
        load_tokenizer(folder, "tokenizer"),
        load_frozen(CLIPTextModel.from_pretrained, folder, "text_encoder", dtype, device),
    )
    t5 = (
        load_tokenizer(folder, "tokenizer_2"),
        load_frozen(T5EncoderModel.from_pretrained, folder, "text_encoder_2", dtype, device),
    )
    vae = load_frozen(AutoencoderKL.from_pretrained, folder, "vae", dtype, device)

    config = transformer.config
    channels = int(vae.config["latent_channels"])
    widths_fit = (
        int(config["in_channels"]) == 4 * channels
        and int(t5[1].config.d_model) == int(config["joint_attention_dim"])
        and int(clip[1].config.hidden_size) == int(config["pooled_projection_dim"])
    )
    if not widths_fit:
        raise ValueError(
            f"model folder {str(folder)!r}: component widths do not fit together (transformer "
            f"in_channels {config['in_channels']} == 4 x VAE latent_channels {channels}, T5 "
            f"width == joint_attention_dim {config['joint_attention_dim']}, CLIP width == "
            f"pooled_projection_dim {config['pooled_projection_dim']} were expected)"
        )
    return FluxAdapter(
        name,
        transformer,
        FluxTextEncoder(clip, t5, device),
        VaeDecoder(vae, device),
        latent_shape=(channels, height // scale, width // scale),
        device=device,
        scheduler_config=scheduler_config(folder),
        guidance=guidance,
        autocast_dtype=mixed_precision(dtype),
    )
