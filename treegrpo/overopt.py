"""Over-optimisation watch: is the policy gaming the training reward?

Two signals per gallery epoch, from the held-out gallery (ODE samples of the evaluation prompts
from the same noise every time):
- the reward gap: training reward (the epoch's rollouts) minus held-out reward. A policy that
  learns the reward rather than the task widens it;
- diversity: the mean pairwise distance of the gallery's images (RMS over pixels, in [0, 1]
  for images in [0, 1]). Reward hacking often collapses the samples onto a few modes.
The flag is raised when, against the previous gallery epoch, the gap rose while diversity fell.

Metric names (docs/API.md): eval/reward_mean, watch/reward_gap, watch/diversity, watch/overopt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def gallery_diversity(images: Tensor) -> float:
    """Mean pairwise RMS pixel distance over distinct pairs of a (B, C, H, W) batch."""
    flat = images.detach().flatten(1).float().cpu()  # (B, C*H*W)
    count = flat.shape[0]
    if count < 2:
        return 0.0
    distances = torch.cdist(flat, flat) / math.sqrt(flat.shape[1])  # (B, B), zero diagonal
    return float(distances.sum() / (count * (count - 1)))


def watch_metrics(
    metrics: Mapping[str, float], previous: Sequence[float] | None
) -> tuple[dict[str, float], list[float] | None]:
    """watch/reward_gap and watch/overopt for a gallery epoch's metrics, and the (gap,
    diversity) to compare the next gallery epoch with. `previous` is that pair from the last
    gallery epoch (kept in the checkpoint's TrainState, so a resumed run flags as a straight
    one), or None. The flag is 0.0 at the first epoch with a gap."""
    train, held_out = metrics.get("reward_mean"), metrics.get("eval/reward_mean")
    diversity = metrics.get("watch/diversity")
    if train is None or held_out is None or diversity is None:
        return {}, None if previous is None else list(previous)
    gap = float(train) - float(held_out)
    rising_and_narrowing = False
    if previous is not None:
        last_gap, last_diversity = previous
        rising_and_narrowing = gap > last_gap and diversity < last_diversity
    out = {"watch/reward_gap": gap, "watch/overopt": float(rising_and_narrowing)}
    return out, [gap, float(diversity)]
