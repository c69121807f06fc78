"""JPEG (in)compressibility rewards (DDPO): flat images compress better than noise."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from treegrpo.config import ConfigError
from treegrpo.rewards.jpeg import jpeg_size_kb
from treegrpo.rewards.registry import load_rewards


def _flat_and_noise(channels: int) -> torch.Tensor:
    noise = torch.rand(1, channels, 32, 32, generator=torch.Generator().manual_seed(0))
    flat = torch.full((1, channels, 32, 32), 0.5)
    return torch.cat([flat, noise])  # (2, C, 32, 32)


@pytest.mark.parametrize("channels", [1, 3])
def test_flat_image_compresses_better_than_noise(channels: int) -> None:
    images = _flat_and_noise(channels)
    fns = load_rewards({"jpeg_compressibility": 1.0, "jpeg_incompressibility": 1.0})
    comp = fns["jpeg_compressibility"](images, ["a", "b"])
    incomp = fns["jpeg_incompressibility"](images, ["a", "b"])
    for scores in (comp, incomp):
        assert (
            scores.shape == (2,) and scores.dtype == torch.float32 and scores.device.type == "cpu"
        )
    assert comp[0] > comp[1]  # the flat image is the more compressible
    assert incomp[1] > incomp[0]
    assert torch.equal(comp, -incomp)
    assert (incomp > 0).all()  # sizes in kB are positive, so compressibility is negative


def test_size_is_the_pil_quality_95_file_in_kb() -> None:
    images = _flat_and_noise(3)
    pixels = (images[1] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    assert jpeg_size_kb(images)[1].item() == pytest.approx(len(buffer.getvalue()) / 1000)


def test_rejects_options_and_bad_shapes() -> None:
    with pytest.raises(ConfigError) as info:
        load_rewards({"jpeg_compressibility": 1.0}, "cpu", {"jpeg_compressibility": {"q": 90}})
    assert info.value.field == "reward_options.jpeg_compressibility.q"
    fn = load_rewards({"jpeg_incompressibility": 1.0})["jpeg_incompressibility"]
    with pytest.raises(ValueError, match="1 or 3"):
        fn(torch.zeros(1, 2, 8, 8), ["a"])
