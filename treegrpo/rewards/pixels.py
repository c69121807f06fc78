"""Weight-free rewards on pixels: useful for tests and as sanity targets."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from treegrpo.rewards.signature import Metadata


def brightness(images: Tensor, prompts: Sequence[str], metadata: Metadata = ()) -> Tensor:
    """Mean pixel value in [0, 1]."""
    return images.float().mean(dim=(1, 2, 3)).cpu()


def contrast(images: Tensor, prompts: Sequence[str], metadata: Metadata = ()) -> Tensor:
    """Pixel standard deviation per image."""
    return images.float().flatten(1).std(dim=1, unbiased=False).cpu()
