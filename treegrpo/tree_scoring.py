"""From a grown tree to advantages: leaf rewards -> per-prompt z-scores -> backed-up values.

Shared by the trainer and by one-off trees (`treegrpo sample-tree`, the workers' sample and
branch jobs), so a logged tree shows exactly the advantages training used.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from treegrpo.advantages import backup, combine_rewards
from treegrpo.models.base import ModelAdapter
from treegrpo.rollout import TreeRollout
from treegrpo.tree import TreeShape


def tree_advantages(
    rollout: TreeRollout,
    rewards: dict[str, Tensor],
    weights: dict[str, float],
    groups: Tensor,
    backup_name: str,
) -> tuple[Tensor, list[Tensor]]:
    """`rewards[name]` is (trees * k^d,) raw scores of the leaves in tree order; `groups` is
    (trees,) prompt ids. Returns leaf advantages (trees, k^d) and the backup's values[j]
    (trees, k^j) for j = 0..d."""
    return advantages_from_scores(
        rollout.shape, rollout.log_probs, rewards, weights, groups, backup_name
    )


def advantages_from_scores(
    shape: TreeShape,
    log_probs: Mapping[int, Tensor],
    rewards: dict[str, Tensor],
    weights: dict[str, float],
    groups: Tensor,
    backup_name: str,
) -> tuple[Tensor, list[Tensor]]:
    """`tree_advantages` from what it reads of a rollout: the window's edge log-probs
    (`log_probs[step]` (trees, width)) and the leaf rewards. The trainer of a multi-process run
    gathers these from every rank, so that a prompt's group spans all its trees."""
    leaves_per_tree = shape.width(shape.steps)
    leaf_groups = groups.repeat_interleave(leaves_per_tree)
    leaf_adv = combine_rewards(rewards, weights, leaf_groups).reshape(-1, leaves_per_tree)
    edge_log_probs = [log_probs[shape.window_start + j] for j in range(1, shape.depth + 1)]
    return leaf_adv, backup(backup_name, leaf_adv, shape.k, edge_log_probs, groups)


def decode_steps(adapter: ModelAdapter, blocks: dict[int, Tensor]) -> dict[int, Tensor]:
    """Step-indexed latent blocks (trees, width, C, H, W) -> images (trees, width, C', H', W')."""
    images = {}
    for step, block in blocks.items():
        decoded = adapter.decode(block.reshape(-1, *block.shape[2:]))  # (trees * width, ...)
        images[step] = decoded.reshape(*block.shape[:2], *decoded.shape[1:])
    return images
