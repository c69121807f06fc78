"""JPEG (in)compressibility: the size of each image saved as a quality-95 JPEG, in kB.

The two prompt-free rewards of DDPO (Black et al. 2023, "Training Diffusion Models with
Reinforcement Learning", section 6.1; kvablack/ddpo-pytorch, `ddpo_pytorch/rewards.py`):
`jpeg_compressibility = -size_kb` favours flat, smooth images; `jpeg_incompressibility = +size_kb`
favours busy, detailed ones. As there, pixels are rounded to 8 bits, the file is written by PIL with
quality 95, and a kB is 1000 bytes. Grey images (C = 1) are saved as 8-bit greyscale JPEGs.

    scores = jpeg_compressibility(images, prompts, metadata)  # (B,) float32, higher = smaller file
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from treegrpo.config import ConfigError
from treegrpo.rewards.signature import Metadata, RewardFn

JPEG_QUALITY = 95


def to_pil_images(images: Tensor) -> list[Image.Image]:
    """(B, C, H, W) floats in [0, 1] -> B 8-bit PIL images: mode "L" for C = 1, "RGB" for C = 3."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (B, 1 or 3, H, W), got shape {tuple(images.shape)}")
    pixels = (images.detach().float() * 255).round().clamp(0, 255).to(torch.uint8).cpu()
    pixels = pixels.permute(0, 2, 3, 1)  # (B, H, W, C)
    if pixels.shape[-1] == 1:
        pixels = pixels[..., 0]  # (B, H, W): greyscale
    return [Image.fromarray(array) for array in pixels.numpy()]


def jpeg_size_kb(images: Tensor) -> Tensor:
    """(B,) float32: the size of each image as a quality-95 JPEG, in kB (1000 bytes)."""
    sizes = []
    for image in to_pil_images(images):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        sizes.append(buffer.tell() / 1000.0)
    return torch.tensor(sizes, dtype=torch.float32)


def jpeg_compressibility(images: Tensor, prompts: Sequence[str], metadata: Metadata = ()) -> Tensor:
    """Minus the JPEG size in kB: higher for images that compress well."""
    return -jpeg_size_kb(images)


def jpeg_incompressibility(
    images: Tensor, prompts: Sequence[str], metadata: Metadata = ()
) -> Tensor:
    """The JPEG size in kB: higher for images that compress badly."""
    return jpeg_size_kb(images)


def _no_options(name: str, options: Mapping[str, Any]) -> None:
    if options:
        key = next(iter(options))
        raise ConfigError(f"reward_options.{name}.{key}", f"{name} takes no options")


def jpeg_compressibility_factory(device: torch.device, options: Mapping[str, Any]) -> RewardFn:
    """Registry factory for `jpeg_compressibility` (runs on the CPU whatever the device)."""
    _no_options("jpeg_compressibility", options)
    return jpeg_compressibility


def jpeg_incompressibility_factory(device: torch.device, options: Mapping[str, Any]) -> RewardFn:
    """Registry factory for `jpeg_incompressibility` (runs on the CPU whatever the device)."""
    _no_options("jpeg_incompressibility", options)
    return jpeg_incompressibility
