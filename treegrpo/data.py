"""Training data that ships inside a package: scikit-learn's handwritten digits."""

from __future__ import annotations

import torch
from torch import Tensor


def load_digit_images(size: int = 16) -> tuple[Tensor, Tensor]:
    """(N, 1, size, size) images in [-1, 1] with ink bright, and (N,) labels. N = 1797."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0  # (N, 1, 8, 8)
    images = torch.nn.functional.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False
    )
    return images.clamp(0.0, 1.0) * 2.0 - 1.0, torch.tensor(data.target, dtype=torch.long)
