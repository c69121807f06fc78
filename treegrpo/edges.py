"""Training edges: what the policy update needs from a rollout, in one shape for all algorithms.

An edge batch groups SDE edges by their parent state: one model forward at the parent gives the
Gaussian (mean, std) of every child, so a tree node's k children cost one evaluation (the
paper's amortisation). Flat trajectories are the special case of one child per parent.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from treegrpo.rollout import FlatRollout, TreeRollout


@dataclass
class EdgeBatch:
    parents: Tensor  # (P, C, H, W) state at the start of the step
    steps: Tensor  # (P,) long: step index of the parent
    prompt_index: Tensor  # (P,) long: row of the epoch's conditioning
    children: Tensor  # (P, m, C, H, W) sampled next states
    log_prob_old: Tensor  # (P, m)
    advantages: Tensor  # (P, m)
    depth: Tensor  # (P,) long: tree depth of the children (flat: the step index + 1)

    def __len__(self) -> int:
        return int(self.parents.shape[0])

    def select(self, index: Tensor) -> EdgeBatch:
        return EdgeBatch(
            **{
                f.name: getattr(self, f.name).index_select(
                    0, index.to(getattr(self, f.name).device)
                )
                for f in fields(self)
            }
        )

    @staticmethod
    def cat(parts: list[EdgeBatch]) -> EdgeBatch:
        return EdgeBatch(
            **{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(EdgeBatch)}
        )


def tree_edges(rollout: TreeRollout, values: list[Tensor]) -> EdgeBatch:
    """Window edges of all trees; the edge into a depth-j node carries values[j]."""
    shape, trees, k = rollout.shape, rollout.trees, rollout.shape.k
    parts = []
    for level in range(shape.depth):
        step = shape.window_start + level
        parents = rollout.states[step]  # (trees, k^level, C, H, W)
        width = parents.shape[1]
        latent = parents.shape[2:]
        device = parents.device
        parts.append(
            EdgeBatch(
                parents=parents.reshape(trees * width, *latent),
                steps=torch.full((trees * width,), step, dtype=torch.long, device=device),
                prompt_index=torch.arange(trees, device=device).repeat_interleave(width),
                children=rollout.states[step + 1].reshape(trees * width, k, *latent),
                log_prob_old=rollout.log_probs[step + 1].reshape(trees * width, k),
                advantages=values[level + 1].to(device).reshape(trees * width, k),
                depth=torch.full((trees * width,), level + 1, dtype=torch.long, device=device),
            )
        )
    return EdgeBatch.cat(parts)


def flat_edges(rollout: FlatRollout, advantages: Tensor, train_steps: Tensor) -> EdgeBatch:
    """The trained steps of every trajectory; all steps of a trajectory share its advantage.

    `train_steps` is (rows, m) long: trajectory r trains its steps train_steps[r] (DanceGRPO
    draws them per trajectory; the others give every row the same m steps). Edges come step
    slot by step slot: slot j holds every row's j-th trained step.
    """
    rows = rollout.states.shape[0]
    device = rollout.states.device
    if train_steps.ndim != 2 or train_steps.shape[0] != rows:
        raise ValueError(f"need (rows={rows}, m) trained steps, got {tuple(train_steps.shape)}")
    stochastic = rollout.sde_steps.cpu()[train_steps.cpu()]  # (rows, m) bool
    untrainable = sorted(set(train_steps.cpu()[~stochastic].tolist()))
    if untrainable:
        raise ValueError(f"steps {untrainable} were deterministic and cannot be trained")
    prompt_of_row = torch.arange(len(rollout.prompts), device=device).repeat_interleave(
        rollout.group_size
    )
    row_index = torch.arange(rows, device=device)
    parts = []
    for slot in range(train_steps.shape[1]):
        steps = train_steps[:, slot].to(device)  # (rows,)
        parts.append(
            EdgeBatch(
                parents=rollout.states[row_index, steps],
                steps=steps,
                prompt_index=prompt_of_row,
                children=rollout.states[row_index, steps + 1][:, None],  # (rows, 1, C, H, W)
                log_prob_old=rollout.log_probs[row_index, steps][:, None],
                advantages=advantages.to(device)[:, None],
                depth=steps + 1,
            )
        )
    return EdgeBatch.cat(parts)
