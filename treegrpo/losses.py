"""The PPO-clipped policy loss over SDE edges, and the optional KL to the reference
(docs/TREEGRPO.md §6; update.edge_loss puts them together).

ratio  = exp(log p_theta(child) - log p_old(child))
A      = clamp(A(e), -adv_clip, adv_clip)
loss_e = max(-A ratio, -A clamp(ratio, 1 - eps, 1 + eps))
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor


def ppo_clip_loss(
    log_prob: Tensor,
    log_prob_old: Tensor,
    advantages: Tensor,
    clip_range: float,
    adv_clip: float,
) -> tuple[Tensor, Tensor]:
    """Elementwise PPO loss and ratio; all inputs share a shape, e.g. (nodes, children)."""
    ratio = torch.exp(log_prob - log_prob_old)
    clamped = advantages.clamp(-adv_clip, adv_clip)
    unclipped = -clamped * ratio
    clipped = -clamped * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    return torch.maximum(unclipped, clipped), ratio


def aggregate_children(loss: Tensor, how: Literal["sum", "mean"]) -> Tensor:
    """(nodes, children) -> (nodes,): the official code sums over a node's k children."""
    return loss.sum(dim=1) if how == "sum" else loss.mean(dim=1)


def kl_to_reference(mean: Tensor, reference_mean: Tensor, std: Tensor) -> Tensor:
    """Flow-GRPO's KL between Gaussians of equal std: ||mu - mu_ref||^2 (dim-mean) / (2 std^2).

    mean, reference_mean: (B, C, H, W); std broadcastable, e.g. (B, 1, 1, 1). Returns (B,).
    """
    squared = ((mean - reference_mean) ** 2).mean(dim=tuple(range(1, mean.ndim)))
    return squared / (2.0 * std.reshape(std.shape[0], -1)[:, 0] ** 2)


def ratio_stats(
    ratio: Tensor, log_prob: Tensor, log_prob_old: Tensor, clip_range: float
) -> dict[str, float]:
    """Clip fraction, approximate KL (0.5 E[(log r)^2]) and ratio range, as floats."""
    with torch.no_grad():
        log_ratio = log_prob - log_prob_old
        return {
            "clip_fraction": float(((ratio - 1.0).abs() > clip_range).float().mean()),
            "approx_kl": float(0.5 * (log_ratio**2).mean()),
            "ratio_mean": float(ratio.mean()),
            "ratio_min": float(ratio.min()),
            "ratio_max": float(ratio.max()),
        }
