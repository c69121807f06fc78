"""Where the SDE window sits in an epoch.

TreeGRPO (docs/TREEGRPO.md §3 and §7.4): `random` (paper Eq. 7), `shift` (official code) or `fixed`;
the tree's window ends before the last step, so its starts run 0 .. T - d - 1.
MixGRPO (§7.3): a window that slides one step every `slide_every` iterations and rolls back to 0
past the end (`sliding_window`).
"""

from __future__ import annotations

import random

from treegrpo.algorithm_names import tree_last_start
from treegrpo.config import TreeConfig


def truncated_geometric_probabilities(last_start: int, ratio: float) -> list[float]:
    """P[s] = (1 - r) r^s / (1 - r^(last_start + 1)) for s = 0..last_start (paper Eq. 7)."""
    weights = [(1.0 - ratio) * ratio**s for s in range(last_start + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def window_start(tree: TreeConfig, steps: int, epoch: int, rng: random.Random) -> int:
    """Start step s of the tree's window of `tree.depth` steps for `epoch` (0-based).

    `random` draws once per epoch from the truncated geometric distribution over
    s = 0 .. T - d - 1 (favours early, noisy steps); `shift` starts at tree.window_start and moves
    by shift_by every shift_every epochs, then stays at the last start (the official train.py
    never wraps: it asserts `self.tree_steps[-1] < self.config.sample.num_inference_steps - 1`,
    so its run stops where ours stays); `fixed` returns tree.window_start.
    """
    last_start = tree_last_start(steps, tree.depth)
    if tree.window == "fixed":
        return tree.window_start
    if tree.window == "shift":
        moved = tree.window_start + (epoch // tree.shift_every) * tree.shift_by
        return min(moved, last_start)
    probabilities = truncated_geometric_probabilities(last_start, tree.window_ratio)
    return rng.choices(range(last_start + 1), weights=probabilities)[0]


def sliding_window(steps: int, width: int, slide_every: int, iteration: int) -> list[int]:
    """MixGRPO's window of this iteration: start 0, one step later every `slide_every`
    iterations; the steps run up to T - 2 (exclusive), so the window narrows near the end and
    the last two steps stay ODE (`max_timesteps = sampling_steps - 2` in MixGRPO's
    train_grpo_flux.py); past the last start it rolls back to 0 (`--roll_back`)."""
    end = steps - 2
    start = (iteration // slide_every) % end
    return list(range(start, min(start + width, end)))
