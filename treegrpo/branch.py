"""Branching again from a stored tree node: k new children by one SDE step, ODE tails to the end.

A logged tree keeps the latent (the state x at its step) of each node a branch can start from
(treegrpo/branchable.py says which can and why not). From the state of node u at
step i, `regrow` takes the same stochastic step the tree rollout takes inside its window (one
model evaluation at u, k children from one Gaussian, docs/TREEGRPO.md §3, step 3), then carries
each child to the final step with deterministic ODE steps (§3, step 4). Given the noises
the tree drew for u's children, it reproduces them and their leaves exactly; given fresh noises
it explores what else u could have become.

    noise = torch.randn((k, *adapter.latent_shape), generator=generator)
    grown = regrow(adapter, schedule, adapter.encode_prompts([prompt]), latent, step, noise,
                   cfg_scale=4.5, eta=0.7)
    grown.states[:, -1]   # (k, C, H, W) the new leaves' latents

New leaves are compared with the tree's own leaves: `advantages_against` z-scores each reward
against the mean and population std of the tree's leaves (docs/TREEGRPO.md §5's normalisation,
with the tree as the group), so a branch leaf's advantage reads on the same scale as the tree's.
`branch_nodes` lays the new states out as tree nodes (tree_record.TreeNodeRecord), the one node
layout that trees and branches are stored in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from treegrpo.advantages import EPS, group_zscore
from treegrpo.models.base import Conditioning, ModelAdapter
from treegrpo.rollout import Evaluator
from treegrpo.schedules import Schedule
from treegrpo.scoring import weighted_sum
from treegrpo.stepping import gaussian_log_prob
from treegrpo.tree_record import TreeNodeRecord

LATENT_KEY = "latent"


@dataclass
class Regrowth:
    """k chains grown from one node at step `start`: chain c holds its states at steps
    start + 1 .. T (its child, then the ODE tail; the last entry is the leaf)."""

    start: int
    states: Tensor  # (k, T - start, C, H, W)
    x0: Tensor  # (k, T - start, C, H, W) predicted clean latent of each state (leaf: itself)
    log_probs: Tensor  # (k,) log p of each child under the SDE step from the node
    model_evals: int

    @property
    def k(self) -> int:
        return int(self.states.shape[0])

    @property
    def leaves(self) -> Tensor:
        return self.states[:, -1]  # (k, C, H, W)

    def step_of(self, position: int) -> int:
        """Step index of position `position` (0-based) along a chain."""
        return self.start + 1 + position


@torch.no_grad()
def regrow(
    adapter: ModelAdapter,
    schedule: Schedule,
    cond: Conditioning,
    latent: Tensor,
    step: int,
    noise: Tensor,
    cfg_scale: float,
    eta: float,
    max_batch: int = 0,
) -> Regrowth:
    """Grow `noise.shape[0]` children from `latent` (C, H, W), the state at `step`.

    `cond` is the prompt's conditioning (one row). The children share the node's mean and std
    and differ only by their noises (k, C, H, W); each then follows the probability-flow ODE.
    """
    if not 0 <= step < schedule.steps:
        raise ValueError(
            f"cannot branch from step {step}: a node at step {schedule.steps} is a final image "
            f"and there is no step after it (steps run 0..{schedule.steps})"
        )
    k = noise.shape[0]
    evaluator = Evaluator(adapter, schedule, cfg_scale, max_batch)
    x = latent.to(adapter.device, torch.float32)[None]  # (1, C, H, W)
    # 1. One SDE step at the node: the k children share (mean, std).
    out = evaluator(x, step, cond)
    mean, std = schedule.gaussian(x, out, step, eta)  # (1, C, H, W), (1, 1, 1, 1)
    x = mean + std * noise.to(adapter.device, torch.float32)  # (k, C, H, W)
    log_probs = gaussian_log_prob(x, mean, std)  # (k,)
    # 2. ODE tails: every child to the last step, recording each state and its predicted x0.
    rows = cond.select(torch.zeros(k, dtype=torch.long))
    states, x0 = [x], []
    for i in range(step + 1, schedule.steps):
        out = evaluator(x, i, rows)
        x0.append(schedule.predicted_x0(x, out, i))
        x = schedule.ode(x, out, i)
        states.append(x)
    x0.append(x)  # a leaf's prediction is the leaf
    return Regrowth(
        start=step,
        states=torch.stack(states, dim=1),  # (k, T - step, C, H, W)
        x0=torch.stack(x0, dim=1),
        log_probs=log_probs.float().cpu(),
        model_evals=evaluator.evals,
    )


def advantages_against(
    reference: Mapping[str, Tensor], rewards: Mapping[str, Tensor], weights: Mapping[str, float]
) -> Tensor:
    """Advantages of new leaves relative to a tree's leaves: sum_r w_r (x - mean_r) / (std_r + eps)
    with the mean and population std of `reference[r]` (the tree's leaf scores). A reward the
    reference lacks is z-scored among the new leaves themselves."""
    total: Tensor | None = None
    for name, weight in weights.items():
        values = rewards[name].double()
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"reward {name!r} holds NaN or infinite values")
        base = reference.get(name)
        if base is not None and base.numel() > 0:
            base = base.double()
            mean = base.mean()
            std = ((base - mean) ** 2).mean().sqrt()
            term = weight * (values - mean) / (std + EPS)
        else:
            term = weight * group_zscore(values, torch.zeros(values.shape[0])).double()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no rewards to compare")
    return total.float()


def branch_nodes(
    grown: Regrowth,
    schedule: Schedule,
    images: Tensor,
    leaf_scores: Mapping[str, Tensor],
    advantages: Tensor,
    weights: Mapping[str, float],
    depth: int,
) -> list[TreeNodeRecord]:
    """The regrown states as nodes, numbered level by level from 0 like a tree's own: the state
    of chain c at position p is node p k + c, whose parent is node (p - 1) k + c (none for the k
    children of the branched node, which lives in the tree). `images` (k, T - start, C, H, W)
    are the decoded clean estimates, `leaf_scores[name]` (k,) and `advantages` (k,) the leaves'.
    Each child carries its log-prob and advantage, each leaf its scores and advantage; every
    node records `depth` (the branched node's depth + 1)."""
    k, length = grown.k, grown.states.shape[1]
    nodes = []
    for position in range(length):
        step = grown.step_of(position)
        is_leaf = position == length - 1
        for child in range(k):
            index = position * k + child
            scores = {name: float(v[child]) for name, v in leaf_scores.items()} if is_leaf else None
            nodes.append(
                TreeNodeRecord(
                    id=index,
                    parent_id=None if position == 0 else index - k,
                    step_index=step,
                    depth=depth,
                    t=float(schedule.t[step]),
                    sigma=float(schedule.sigma[step]),
                    is_leaf=is_leaf,
                    log_prob=float(grown.log_probs[child]) if position == 0 else None,
                    reward=weighted_sum(scores, weights) if scores else None,
                    advantage=float(advantages[child]) if position == 0 or is_leaf else None,
                    rewards=scores,
                    image=images[child, position],
                    latent=grown.states[child, position],
                )
            )
    return nodes


# How a node's latent may be stored (TREEGRPO_LATENT_DTYPE): float32 keeps the state exactly;
# bfloat16 halves the bytes, and a branch then starts from the state rounded to 8 mantissa bits.
LATENT_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# The dtype the rollout's states and step math use, whatever the model's weights are in
# (RunConfig.dtype: "step math always runs in float32"): a stored latent loads back as this.
STATE_DTYPE = torch.float32


def save_latent(path: Path, latent: Tensor, dtype: str = "float32") -> None:
    """One node's state (C, H, W) as safetensors: float32 (a branch starts from it exactly) or
    bfloat16 (half the bytes; a branch starts from the rounded state)."""
    from safetensors.torch import save_file

    if dtype not in LATENT_DTYPES:
        raise ValueError(
            f"latent dtype {dtype!r} is not one of {', '.join(LATENT_DTYPES)} (how node latents "
            "are stored for branch again)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = latent.detach().to("cpu", LATENT_DTYPES[dtype]).contiguous()
    save_file({LATENT_KEY: stored}, str(path))


def load_latent(path: Path, dtype: torch.dtype = STATE_DTYPE) -> Tensor:
    """A stored state as `dtype` (the rollout's float32), whichever dtype it was stored in."""
    from safetensors.torch import load_file

    return load_file(str(path))[LATENT_KEY].to(dtype)
