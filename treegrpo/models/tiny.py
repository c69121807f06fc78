"""A tiny random-init text-to-image model for tests and benchmarks: no weights, no downloads.

The denoiser is a small conv net with FiLM conditioning on the timestep and a prompt embedding.
The prompt embedding hashes character trigrams into a fixed vector, so different prompts condition
differently without any tokenizer. Both families exist: `tiny-random` (flow matching, velocity)
and `tiny-random-ddim` (epsilon prediction, DDIM).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from treegrpo.models.base import Conditioning, ModelAdapter
from treegrpo.schedules import Family

TEXT_DIM = 64


def hashed_text_embedding(prompts: Sequence[str], dim: int = TEXT_DIM) -> Tensor:
    """(B, dim) L2-normalised bag of character trigrams; the empty prompt maps to zeros."""
    out = torch.zeros(len(prompts), dim)
    for row, prompt in enumerate(prompts):
        text = f"  {prompt.lower()} "
        for start in range(len(text) - 2):
            out[row, zlib.crc32(text[start : start + 3].encode()) % dim] += 1.0
    return out / out.norm(dim=1, keepdim=True).clamp_min(1e-6)


def timestep_embedding(timesteps: Tensor, dim: int) -> Tensor:
    """(B,) timesteps in [0, 1000] -> (B, dim) sinusoidal features."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class FiLMBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(8, width)
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.film = nn.Linear(width, 2 * width)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb).chunk(2, dim=1)  # (B, width) each
        y = self.norm(h) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        return h + self.conv(nn.functional.silu(y))


class TinyDenoiser(nn.Module):
    def __init__(self, channels: int = 3, width: int = 32, blocks: int = 2) -> None:
        super().__init__()
        self.width = width
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.text_proj = nn.Linear(TEXT_DIM, width)
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(FiLMBlock(width) for _ in range(blocks))
        self.conv_out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: Tensor, timesteps: Tensor, text: Tensor) -> Tensor:
        emb = self.time_mlp(timestep_embedding(timesteps, self.width).to(x.dtype))
        emb = emb + self.text_proj(text.to(x.dtype))  # (B, width)
        h = self.conv_in(x)  # (B, width, H, W)
        for block in self.blocks:
            h = block(h, emb)
        return self.conv_out(nn.functional.silu(h))  # (B, C, H, W)


class TinyAdapter(ModelAdapter):
    """Random-init, deterministic for a given seed. `width` and `image_size` scale the compute.
    `empty`: the denoiser on the meta device, for a sharded run's ranks > 0 (rank 0's weights
    are broadcast into the shards, `sharding.fill_shards`)."""

    def __init__(
        self,
        family: Family = "flow",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        image_size: int = 8,
        channels: int = 3,
        width: int = 32,
        blocks: int = 2,
        seed: int = 0,
        empty: bool = False,
    ) -> None:
        self.family = family
        self.name = "tiny-random" if family == "flow" else "tiny-random-ddim"
        self.latent_shape = (channels, image_size, image_size)
        self.device = torch.device(device)
        self.dtype = dtype
        if empty:
            with torch.device("meta"):
                self.denoiser = TinyDenoiser(channels, width, blocks).to(dtype=dtype)
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.denoiser = TinyDenoiser(channels, width, blocks)
        self.denoiser.to(device=self.device, dtype=dtype)

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        return Conditioning({"text": hashed_text_embedding(prompts).to(self.device)})

    def denoise(
        self, x: Tensor, timesteps: Tensor, cond: Conditioning, denoiser: nn.Module | None = None
    ) -> Tensor:
        module = denoiser if denoiser is not None else self.denoiser
        out: Tensor = module(x, timesteps, cond.tensors["text"])
        return out

    def decode(self, latents: Tensor) -> Tensor:
        return ((latents.float().clamp(-1.0, 1.0) + 1.0) / 2.0).cpu()
