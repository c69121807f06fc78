"""The shipped default model: text-to-image on scikit-learn's digits, upscaled to 16 x 16.

A small diffusers `SD3Transformer2DModel` (MMDiT, 2.4 M parameters) conditioned on the offline
MiniLM's token states and pooled embedding, so it runs through `SD3StyleAdapter`, the same code
path as SD3 / SD3.5. Two variants:
- `digits`: flow matching (velocity), like SD3;
- `digits-ddim`: epsilon prediction with DDIM steps on linear DDPM betas, like SD1.5's family.
Latents are the pixels themselves (1 x 16 x 16 in [-1, 1], ink bright); decoding maps to [0, 1].
Weights ship in `treegrpo/models/weights/` and are made by `treegrpo pretrain digits`.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from treegrpo.models.diffusers_adapter import mixed_precision
from treegrpo.models.sd3 import SD3StyleAdapter

WEIGHTS_DIR = Path(__file__).parent / "weights"
IMAGE_SIZE = 16
VARIANTS = ("digits", "digits-ddim")

# Sized from ECOSYSTEM.md's CPU table: ~23 ms forward at batch 16 on 2 cores.
TRANSFORMER_CONFIG = {
    "sample_size": IMAGE_SIZE,
    "patch_size": 2,
    "in_channels": 1,
    "out_channels": 1,
    "num_layers": 4,
    "attention_head_dim": 32,
    "num_attention_heads": 4,
    "joint_attention_dim": 384,
    "caption_projection_dim": 128,
    "pooled_projection_dim": 384,
    "pos_embed_max_size": IMAGE_SIZE // 2,
}


def ddpm_alphas_cumprod(
    steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Tensor:
    """Linear DDPM betas (Ho et al. 2020): pixel space needs the near-zero final alpha."""
    betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def build_transformer(seed: int = 0) -> torch.nn.Module:
    from diffusers import SD3Transformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: torch.nn.Module = SD3Transformer2DModel(**TRANSFORMER_CONFIG)
    return model


def weights_path(variant: str) -> Path:
    return WEIGHTS_DIR / f"{variant}.safetensors"


def scheduler_config(variant: str) -> dict[str, Any]:
    """The variant's diffusers scheduler config, shipped beside its weights: flow matching
    without shift (as pre-trained), or DDIM on linear DDPM betas with leading spacing."""
    config: dict[str, Any] = json.loads((WEIGHTS_DIR / f"{variant}-scheduler.json").read_text())
    return config


@cache
def _text_encoder(device: str) -> object:
    from treegrpo.models.minilm import MiniLMEncoder

    return MiniLMEncoder(device)


def pixels_to_images(latents: Tensor) -> Tensor:
    return (latents.float() + 1.0) / 2.0


def load_digits_model(
    variant: str = "digits",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    weights: Path | None = None,
    empty: bool = False,
) -> SD3StyleAdapter:
    """The shipped weights (or `weights`), or a fresh init when `weights` is False-y and absent;
    `empty`: the transformer on the meta device, no weights read (`folder.load_denoiser`)."""
    from safetensors.torch import load_file

    if variant not in VARIANTS:
        raise ValueError(f"unknown digits variant {variant!r}; known: {', '.join(VARIANTS)}")
    torch_device = torch.device(device)
    if empty:
        with torch.device("meta"):
            empty_transformer = build_transformer()
        return make_adapter(variant, empty_transformer, torch_device, dtype)
    transformer = build_transformer()
    path = weights if weights is not None else weights_path(variant)
    if not path.exists():
        raise FileNotFoundError(
            f"no weights for {variant!r} at {path}; make them with `treegrpo pretrain {variant}`"
        )
    state = load_file(str(path))
    transformer.load_state_dict({k: v.float() for k, v in state.items()})
    return make_adapter(variant, transformer, torch_device, dtype)


def make_adapter(
    variant: str, transformer: torch.nn.Module, device: torch.device, dtype: torch.dtype
) -> SD3StyleAdapter:
    if not any(param.is_meta for param in transformer.parameters()):
        transformer.to(device=device)
    encoder = _text_encoder(str(device))
    return SD3StyleAdapter(
        variant,
        transformer,
        encoder,  # type: ignore[arg-type]
        pixels_to_images,
        latent_shape=(1, IMAGE_SIZE, IMAGE_SIZE),
        device=device,
        family="flow" if variant == "digits" else "epsilon",
        scheduler_config=scheduler_config(variant),
        autocast_dtype=mixed_precision(dtype),
    )
