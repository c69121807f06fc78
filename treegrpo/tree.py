"""Structure and counts of one TreeGRPO tree (docs/TREEGRPO.md §3).

A tree with window start s, window width d and branching k is stored level by level: the states
at step i form a block of `width(i)` nodes, and node n at step i has parent node `parent(i, n)` at
step i - 1. Inside the window every node has k children, numbered parent * k + c; outside it each
node has one child with the same number. So node n at the end of the window descends from node
n // k^j, j levels up.

    steps:  0 .. s           s+1 .. s+d                 s+d+1 .. T
    nodes:  1 each (prefix)  k, k^2, .. k^d (branching)  k^d each (ODE tails to the leaves)
"""

from __future__ import annotations

from dataclasses import dataclass


def leaf_count(k: int, depth: int) -> int:
    return int(k**depth)


def branching_node_count(k: int, depth: int) -> int:
    """Nodes that take an SDE step and have k children: 1 + k + ... + k^(d-1)."""
    return (k**depth - 1) // (k - 1)


def model_evaluations(k: int, depth: int, steps: int, window_start: int) -> int:
    """Denoiser evaluations per tree before CFG: s + (k^d - 1)/(k - 1) + k^d (T - s - d)."""
    return (
        window_start
        + branching_node_count(k, depth)
        + leaf_count(k, depth) * (steps - window_start - depth)
    )


def recorded_state_count(k: int, depth: int, steps: int, window_start: int) -> int:
    """Every state of the tree: 1 + s + (k^(d+1) - k)/(k - 1) + k^d (T - s - d)."""
    window_children = (k ** (depth + 1) - k) // (k - 1)
    return (
        1 + window_start + window_children + leaf_count(k, depth) * (steps - window_start - depth)
    )


def trained_edge_count(k: int, depth: int) -> int:
    """SDE edges in the window, each with its own log-prob and advantage."""
    return (k ** (depth + 1) - k) // (k - 1)


@dataclass(frozen=True)
class TreeShape:
    """Which nodes sit at each step of a tree. Pure bookkeeping; no tensors."""

    k: int
    depth: int
    steps: int
    window_start: int

    def __post_init__(self) -> None:
        if self.k < 2 or self.depth < 1:
            raise ValueError(f"need k >= 2 and depth >= 1, got k={self.k}, depth={self.depth}")
        if not 0 <= self.window_start <= self.steps - self.depth:
            raise ValueError(
                f"window [{self.window_start}, {self.window_start + self.depth}) does not fit "
                f"in {self.steps} steps"
            )

    @property
    def window_end(self) -> int:
        """First step index after the window (the step of the deepest branched states)."""
        return self.window_start + self.depth

    def width(self, step: int) -> int:
        """Number of states at step index `step` (0 = noise, T = leaves)."""
        if step <= self.window_start:
            return 1
        return int(self.k ** (min(step, self.window_end) - self.window_start))

    def depth_at(self, step: int) -> int:
        """SDE branchings on the path from the root to a state at `step`."""
        return max(0, min(step, self.window_end) - self.window_start)

    def parent(self, step: int, node: int) -> int:
        """Index, at step - 1, of the parent of node `node` at `step` (step >= 1)."""
        if self.window_start < step <= self.window_end:
            return node // self.k
        return node

    def is_sde_step(self, step: int) -> bool:
        """Whether the step from state `step` to `step + 1` branches."""
        return self.window_start <= step < self.window_end
