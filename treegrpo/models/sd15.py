"""SD1.5 family: the `SD15Adapter` (a diffusers `UNet2DConditionModel` predicting noise, epsilon,
conditioned on CLIP token states, sampled with DDIM steps on the model's own training noise
schedule), and `load_sd15`, which builds one from a local StableDiffusionPipeline folder.

The adapter takes its text encoder and decoder as callables, like `SD3StyleAdapter`. Its DDIM
grid comes from the folder's scheduler config (any scheduler class: SD1.5 ships PNDM's), read as
DDIMScheduler's (`treegrpo.grids`).
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
    image_size,
    load_denoiser,
    load_frozen,
    load_tokenizer,
    require_components,
    scheduler_config,
    vae_scale_factor,
)
from treegrpo.models.sizes import image_size as checked_image_size
from treegrpo.schedules import Family

if TYPE_CHECKING:
    from transformers import CLIPTextModel, PreTrainedTokenizerBase


class SD15Adapter(DiffusersAdapter[Tensor]):
    """UNet epsilon-prediction model with DDIM steps. The UNet is the policy; text encoder and
    decoder are frozen callables. With `autocast_dtype` set, the UNet keeps float32 master
    weights and its forward runs under autocast in that dtype."""

    family: Family = "epsilon"
    # Every attention of the UNet (self- and cross-attention in each transformer block).
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")
    export_prefix = "unet"

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


class CLIPTokenStates:
    """SD1.5's conditioning: the CLIP text encoder's last hidden states (B, 77, d), no pooled."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, encoder: CLIPTextModel, device: torch.device
    ) -> None:
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.device = device
        self.tokens = clip_length(tokenizer, encoder)
        # A few fine-tunes set this flag; diffusers then passes the padding mask, and so do we.
        self.use_mask = bool(getattr(encoder.config, "use_attention_mask", False))

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> Tensor:
        batch = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokens,
            truncation=True,
            return_tensors="pt",
        )
        mask = batch["attention_mask"].to(self.device) if self.use_mask else None
        states: Tensor = self.encoder(
            batch["input_ids"].to(self.device), attention_mask=mask
        ).last_hidden_state
        return states  # (B, 77, d)


def load_sd15(
    folder: Path,
    index: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
    name: str,
    size: Size = (None, None),
    empty: bool = False,
) -> SD15Adapter:
    """A StableDiffusionPipeline folder of an epsilon-prediction model: its CLIP text encoder,
    UNet and VAE, their widths checked against each other."""
    # Imported here, not at the top: see treegrpo.models.folder.
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    require_components(folder, index, ["unet", "vae", "scheduler", "text_encoder", "tokenizer"])
    scheduler = scheduler_config(folder)
    scale = vae_scale_factor(component_config(folder, "vae"))
    default_h, default_w = image_size(component_config(folder, "unet")["sample_size"])
    height, width = checked_image_size(
        size, (default_h * scale, default_w * scale), scale, f"the VAE's {scale}x"
    )
    height, width = height // scale, width // scale
    prediction = scheduler.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise ValueError(
            f"model folder {str(folder)!r}: prediction_type {prediction!r} is not supported; "
            "the SD1.5 family here expects epsilon prediction"
        )

    unet = load_denoiser(UNet2DConditionModel, folder, "unet", device, empty)
    tokenizer = load_tokenizer(folder, "tokenizer")
    text_encoder = load_frozen(CLIPTextModel.from_pretrained, folder, "text_encoder", dtype, device)
    vae = load_frozen(AutoencoderKL.from_pretrained, folder, "vae", dtype, device)

    config = unet.config
    channels = int(config["in_channels"])
    widths_fit = int(text_encoder.config.hidden_size) == int(
        config["cross_attention_dim"]
    ) and channels == int(config["out_channels"]) == int(vae.config["latent_channels"])
    if not widths_fit:
        raise ValueError(
            f"model folder {str(folder)!r}: component widths do not fit together (text encoder "
            f"hidden_size == unet cross_attention_dim, unet in_channels == out_channels == VAE "
            "latent_channels were expected)"
        )
    return SD15Adapter(
        name,
        unet,
        CLIPTokenStates(tokenizer, text_encoder, device),
        VaeDecoder(vae, device),
        latent_shape=(channels, height, width),
        device=device,
        scheduler_config=scheduler,
        autocast_dtype=mixed_precision(dtype),
    )
