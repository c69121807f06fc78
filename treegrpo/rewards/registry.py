"""Reward registry: `name -> factory(device) -> fn(images, prompts) -> scores`.

Images are (B, C, H, W) float32 in [0, 1]; scores are a float32 CPU tensor (B,). Higher is better.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from treegrpo.rewards.names import REWARD_NAMES
from treegrpo.rewards.pixels import brightness, contrast

RewardFn = Callable[[Tensor, Sequence[str]], Tensor]
RewardFactory = Callable[[torch.device], RewardFn]

REWARDS: dict[str, RewardFactory] = {
    "brightness": lambda device: brightness,
    "contrast": lambda device: contrast,
}

assert set(REWARDS) == set(REWARD_NAMES), "rewards/names.py must list exactly the registry"


def load_rewards(
    weights: Mapping[str, float], device: torch.device | str = "cpu"
) -> dict[str, RewardFn]:
    """One scoring function per named reward of a config."""
    unknown = [name for name in weights if name not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward(s) {unknown}; known: {sorted(REWARDS)}")
    return {name: REWARDS[name](torch.device(device)) for name in weights}
