"""Image preprocessing shared by the benchmark rewards, batched in torch (no PIL round trip).

pixels = resized_crop(images, 224)                # (B, 3, 224, 224) in [0, 1]
pixels = normalised(pixels, CLIP_MEAN, CLIP_STD)  # what a CLIP-style vision tower takes
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def as_rgb_bytes(images: Tensor) -> Tensor:
    """(B, 1 or 3, H, W) in [0, 1] -> (B, 3, H, W) float32 on 8-bit levels, as the originals see
    them (Flow-GRPO hands its rewards `(images * 255).round().clamp(0, 255)` as uint8 PIL images)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (B, 1 or 3, H, W), got shape {tuple(images.shape)}")
    x = (images.detach().float() * 255).round().clamp(0, 255) / 255
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # (B, 3, H, W)


def resized_crop(x: Tensor, size: int) -> Tensor:
    """(B, 3, H, W) -> (B, 3, size, size): shortest side to `size` (bicubic, antialiased), then
    the centre crop (torchvision's Resize(size, BICUBIC) + CenterCrop(size))."""
    height, width = x.shape[-2:]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    if (new_h, new_w) != (height, width):
        x = F.interpolate(
            x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True
        )
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[:, :, top : top + size, left : left + size].clamp(0, 1)  # (B, 3, size, size)


def normalised(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(x - mean) / std per channel of (B, 3, H, W)."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
