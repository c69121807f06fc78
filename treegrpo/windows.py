"""Where the SDE window sits in an epoch: random (paper), shift (official code) or fixed."""

from __future__ import annotations

import random

from treegrpo.config import TreeConfig


def truncated_geometric_probabilities(last_start: int, ratio: float) -> list[float]:
    """P[s] proportional to (1 - r) r^s for s = 0..last_start, normalised."""
    weights = [(1.0 - ratio) * ratio**s for s in range(last_start + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def window_start(tree: TreeConfig, steps: int, width: int, epoch: int, rng: random.Random) -> int:
    """Start step s of the window of `width` steps for `epoch` (0-based).

    `random` draws once per epoch from the truncated geometric distribution (favours early, noisy
    steps); `shift` starts at tree.window_start and moves by shift_by every shift_every epochs,
    wrapping around within the valid starts; `fixed` returns tree.window_start.
    """
    last_start = steps - width
    if tree.window == "fixed":
        return tree.window_start
    if tree.window == "shift":
        moved = tree.window_start + (epoch // tree.shift_every) * tree.shift_by
        return moved % (last_start + 1)
    probabilities = truncated_geometric_probabilities(last_start, tree.window_ratio)
    return rng.choices(range(last_start + 1), weights=probabilities)[0]
