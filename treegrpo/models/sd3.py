"""SD3 family: the `SD3StyleAdapter` (a diffusers `SD3Transformer2DModel`, MMDiT, flow matching,
conditioned on token states plus a pooled embedding, with any text encoder and any decoder), and
`load_sd3`, which builds one from a local StableDiffusion3Pipeline folder.

The shipped digits model (MiniLM text encoder, pixel decoder) and SD3 / SD3.5 folders (CLIP-L,
CLIP-G and T5 encoders, VAE decoder) share this class, so the product's code path is the same
for both. `family="epsilon"` reuses the transformer as a noise predictor with DDIM steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from treegrpo.models.base import Conditioning
from treegrpo.models.diffusers_adapter import DiffusersAdapter, mixed_precision
from treegrpo.models.folder import (
    Size,
    VaeDecoder,
    clip_length,
    component_config,
    has_component,
    image_size,
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
from treegrpo.schedules import Family

if TYPE_CHECKING:
    from transformers import CLIPTextModelWithProjection, PreTrainedTokenizerBase, T5EncoderModel

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj")
T5_MAX_TOKENS = 256  # StableDiffusion3Pipeline's default max_sequence_length


class SD3StyleAdapter(DiffusersAdapter[tuple[Tensor, Tensor]]):
    family: Family = "flow"
    lora_targets = LORA_TARGETS
    export_prefix = "transformer"

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


class SD3TextEncoder:
    """SD3's conditioning, following diffusers' StableDiffusion3Pipeline.encode_prompt:

        clip   = [CLIP-L penultimate states | CLIP-G penultimate states]    (B, 77, dL + dG)
        tokens = [clip zero-padded to T5's width ; T5 last states]           (B, 77 + 256, D)
        pooled = [CLIP-L projection | CLIP-G projection]                      (B, pL + pG)

    Without a T5 encoder its states are zeros of the transformer's joint_attention_dim width, as
    in diffusers, so a model trained with T5 still sees the sequence length it expects.
    """

    def __init__(
        self,
        clip_l: tuple[PreTrainedTokenizerBase, CLIPTextModelWithProjection],
        clip_g: tuple[PreTrainedTokenizerBase, CLIPTextModelWithProjection],
        t5: tuple[PreTrainedTokenizerBase, T5EncoderModel] | None,
        joint_dim: int,
        device: torch.device,
        t5_tokens: int = T5_MAX_TOKENS,
    ) -> None:
        self.clips = (clip_l, clip_g)
        self.t5 = t5
        self.joint_dim = joint_dim
        self.device = device
        self.t5_tokens = t5_tokens
        # diffusers pads both CLIPs to the first tokenizer's length, so their states align.
        self.clip_tokens = clip_length(*clip_l)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        states, pooled = [], []
        for tokenizer, encoder in self.clips:
            out = encoder(
                token_ids(tokenizer, prompts, self.clip_tokens, self.device),
                output_hidden_states=True,
            )
            assert out.hidden_states is not None and out.text_embeds is not None
            states.append(out.hidden_states[-2])  # (B, 77, d): penultimate layer, as SD3 trained
            pooled.append(out.text_embeds)  # (B, p)
        clip = torch.cat(states, dim=-1)  # (B, 77, dL + dG)
        if self.t5 is None:
            t5 = clip.new_zeros(len(prompts), self.t5_tokens, self.joint_dim)  # (B, 256, D)
        else:
            tokenizer, encoder = self.t5
            t5 = encoder(token_ids(tokenizer, prompts, self.t5_tokens, self.device))[0]
            t5 = t5.to(clip.dtype)  # (B, 256, D); T5 may keep some layers in float32
        clip = nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))  # (B, 77, D)
        return torch.cat([clip, t5], dim=-2), torch.cat(pooled, dim=-1)


def load_sd3(
    folder: Path,
    index: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
    name: str,
    size: Size = (None, None),
    empty: bool = False,
) -> SD3StyleAdapter:
    """A StableDiffusion3Pipeline folder: CLIP-L, CLIP-G and (optional) T5 encoders, the MMDiT
    transformer and the VAE, their sizes and widths checked against each other."""
    # Imported here, not at the top: see treegrpo.models.folder.
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    required = ["transformer", "vae", "scheduler", "text_encoder", "tokenizer"]
    require_components(folder, index, [*required, "text_encoder_2", "tokenizer_2"])
    dit = component_config(folder, "transformer")
    require_class(folder, "transformer", dit, "SD3Transformer2DModel")
    scale, patch = vae_scale_factor(component_config(folder, "vae")), int(dit["patch_size"])
    default_h, default_w = image_size(dit["sample_size"])
    max_positions = dit.get("pos_embed_max_size")
    height, width = checked_image_size(
        size,
        (default_h * scale, default_w * scale),
        scale * patch,
        f"the VAE's {scale}x times the transformer's {patch}x{patch} patches",
        None if max_positions is None else int(max_positions) * patch * scale,
    )
    height, width = height // scale, width // scale

    transformer = load_denoiser(SD3Transformer2DModel, folder, "transformer", device, empty)
    clip_l = (
        load_tokenizer(folder, "tokenizer"),
        load_frozen(
            CLIPTextModelWithProjection.from_pretrained, folder, "text_encoder", dtype, device
        ),
    )
    clip_g = (
        load_tokenizer(folder, "tokenizer_2"),
        load_frozen(
            CLIPTextModelWithProjection.from_pretrained, folder, "text_encoder_2", dtype, device
        ),
    )
    t5 = None
    if has_component(index, "text_encoder_3"):
        require_components(folder, index, ["text_encoder_3", "tokenizer_3"])
        t5 = (
            load_tokenizer(folder, "tokenizer_3"),
            load_frozen(T5EncoderModel.from_pretrained, folder, "text_encoder_3", dtype, device),
        )
    vae = load_frozen(AutoencoderKL.from_pretrained, folder, "vae", dtype, device)

    config = transformer.config
    joint_dim = int(config["joint_attention_dim"])
    clip_width = sum(int(encoder.config.hidden_size) for _, encoder in (clip_l, clip_g))
    pooled_width = sum(int(encoder.config.projection_dim) for _, encoder in (clip_l, clip_g))
    widths_fit = (
        clip_width <= joint_dim
        and pooled_width == int(config["pooled_projection_dim"])
        and (t5 is None or int(t5[1].config.d_model) == joint_dim)
        and int(vae.config["latent_channels"]) == int(config["in_channels"])
    )
    if not widths_fit:
        raise ValueError(
            f"model folder {str(folder)!r}: component widths do not fit together (CLIP states "
            f"{clip_width} <= joint_attention_dim {joint_dim}, CLIP projections {pooled_width} == "
            f"pooled_projection_dim {config['pooled_projection_dim']}, T5 width == "
            f"{joint_dim}, VAE latent_channels == transformer in_channels were expected)"
        )

    return SD3StyleAdapter(
        name,
        transformer,
        SD3TextEncoder(clip_l, clip_g, t5, joint_dim, device),
        VaeDecoder(vae, device),
        latent_shape=(int(config["in_channels"]), height, width),
        device=device,
        scheduler_config=scheduler_config(folder),
        autocast_dtype=mixed_precision(dtype),
    )
