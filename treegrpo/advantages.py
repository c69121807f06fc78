"""Advantages: per-prompt leaf z-scores and their backup to internal tree edges
(docs/TREEGRPO.md §5; paper Algorithm 1, Eq. 10-11).

Trees are stored level by level (see `tree.py`), so a depth-j value block of shape
(trees, k^j) has the k children of node n at positions n*k .. n*k + k - 1 of the depth-(j+1)
block. Every backup returns `values[j]` for j = 0..d; the SDE edge into a depth-j node carries
`values[j]`, and `values[0]` is the root's (branch point's) backed-up value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

EPS = 1e-8
GLOBAL_STD_EPS = 1e-4  # flow_grpo's stat tracker


def group_zscore(values: Tensor, groups: Tensor, unbiased: bool = False) -> Tensor:
    """(x - mean) / (std + 1e-8) within each group id; population std (`unbiased`: Bessel's,
    as DanceGRPO's torch `.std()`); equal values give 0."""
    # float64 inside: in float32 the mean of equal values can miss them by ~1e-8, which the
    # 1e-8 epsilon would blow up into O(1) advantages for a group with no signal at all.
    out = torch.zeros(values.shape, dtype=torch.float64, device=values.device)
    for group in torch.unique(groups):
        members = groups == group
        chunk = values[members].double()
        mean = chunk.mean()
        squares = ((chunk - mean) ** 2).sum()
        std = (squares / max(1, chunk.numel() - (1 if unbiased else 0))).sqrt()
        out[members] = (chunk - mean) / (std + EPS)
    return out.float()


def _check_finite(rewards: Mapping[str, Tensor], weights: Mapping[str, float]) -> None:
    for name in weights:
        if not bool(torch.isfinite(rewards[name]).all()):
            raise ValueError(
                f"reward {name!r} holds NaN or infinite values; advantages need finite rewards"
            )


def combine_rewards(
    rewards: Mapping[str, Tensor],
    weights: Mapping[str, float],
    groups: Tensor,
    renormalise: bool = True,
    unbiased: bool = False,
) -> Tensor:
    """Normalise each reward within its prompt group, take the weighted sum, and normalise that
    sum again per group (Algorithm 1, lines 11-13); `renormalise=False` stops at the sum.

    Raises ValueError on a non-finite reward: a NaN would make its whole group's advantages NaN.
    """
    _check_finite(rewards, weights)
    total: Tensor | None = None
    for name, weight in weights.items():
        term = weight * group_zscore(rewards[name], groups, unbiased)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no rewards to combine")
    if renormalise and len(weights) > 1:
        return group_zscore(total, groups, unbiased)
    return total


def weighted_total(rewards: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """sum_name weight * reward, float64: one number per image, for group statistics."""
    return sum(w * rewards[n].double() for n, w in weights.items())  # type: ignore[return-value]


def global_std_advantages(
    rewards: Mapping[str, Tensor], weights: Mapping[str, float], groups: Tensor
) -> Tensor:
    """Flow-GRPO with `global_std`: (R - mean of R's prompt group) / (std of all R + 1e-4).

    R is the weighted sum of the raw rewards (flow_grpo's multi_score `avg`); std is the
    population std over the whole epoch (flow_grpo's PerPromptStatTracker with global_std).
    """
    _check_finite(rewards, weights)
    if not weights:
        raise ValueError("no rewards to combine")
    total = weighted_total(rewards, weights)
    centred = torch.zeros_like(total)
    for group in torch.unique(groups):
        members = groups == group
        centred[members] = total[members] - total[members].mean()
    std = ((total - total.mean()) ** 2).mean().sqrt()
    return (centred / (std + GLOBAL_STD_EPS)).float()


def _children(block: Tensor, k: int) -> Tensor:
    return block.reshape(block.shape[0], -1, k)  # (trees, parents, k)


def backup_mean(leaf_advantages: Tensor, k: int) -> list[Tensor]:
    """Official code: a node's value is the mean of its children's. Input (trees, k^d)."""
    depth = _depth_of(leaf_advantages, k)
    values = [leaf_advantages]
    for _ in range(depth):
        values.insert(0, _children(values[0], k).mean(dim=-1))
    return values


def backup_logprob_softmax(
    leaf_advantages: Tensor, edge_log_probs: Sequence[Tensor], k: int
) -> list[Tensor]:
    """Paper, Alg. 1 and Eq. 10-11: A(u) = sum_j softmax(log p_old(e_1..e_k))_j A(e_j).

    `edge_log_probs[j - 1]` is (trees, k^j): log p_old of the edges into the depth-j nodes.
    """
    depth = _depth_of(leaf_advantages, k)
    if len(edge_log_probs) != depth:
        raise ValueError(f"need {depth} levels of edge log-probs, got {len(edge_log_probs)}")
    values = [leaf_advantages]
    for level in range(depth, 0, -1):
        weights = torch.softmax(_children(edge_log_probs[level - 1].float(), k), dim=-1)
        values.insert(0, (weights * _children(values[0], k)).sum(dim=-1))
    return values


def backup_depth_norm(leaf_advantages: Tensor, k: int, groups: Tensor) -> list[Tensor]:
    """BranchGRPO's variant: node value = mean of its leaves, z-scored among the nodes of the
    same depth of the same prompt's trees. `groups` is (trees,) prompt ids."""
    depth = _depth_of(leaf_advantages, k)
    trees = leaf_advantages.shape[0]
    values = []
    for level in range(depth + 1):
        width = k**level
        node_means = leaf_advantages.reshape(trees, width, -1).mean(dim=-1)  # (trees, k^level)
        node_groups = groups.repeat_interleave(width)
        values.append(group_zscore(node_means.flatten(), node_groups).reshape(trees, width))
    return values


def backup(
    name: str,
    leaf_advantages: Tensor,
    k: int,
    edge_log_probs: Sequence[Tensor],
    groups: Tensor,
) -> list[Tensor]:
    """Dispatch on the config's `tree.backup`."""
    if name == "mean":
        return backup_mean(leaf_advantages, k)
    if name == "logprob_softmax":
        return backup_logprob_softmax(leaf_advantages, edge_log_probs, k)
    if name == "depth_norm":
        return backup_depth_norm(leaf_advantages, k, groups)
    raise ValueError(f"unknown backup {name!r}")


def _depth_of(leaf_advantages: Tensor, k: int) -> int:
    leaves, depth = leaf_advantages.shape[1], 0
    while k**depth < leaves:
        depth += 1
    if k**depth != leaves:
        raise ValueError(f"{leaves} leaves per tree is not a power of k = {k}")
    return depth
