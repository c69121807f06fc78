"""Shares: the ranks whose gradients make each optimizer step, kept for the life of a run, so
that one process resumes a checkpoint written by 2 ranks bit for bit.

A run on W ranks sums each minibatch's gradient from W shares (rank r's members of the
minibatch, `update.ppo_update`), in the order its reduction adds them:

  replicated (train.sharding: none)   each rank accumulates its own micro-batches, then one
                                      all-reduce adds the ranks' totals:
                                          g = sum_r (g_r1 + g_r2 + ...)
  FSDP (train.sharding: fsdp)         every backward reduce-scatters at once, so micro-batch
                                      i of every rank is added before it is accumulated:
                                          g = sum_i (g_0i + g_1i + ...)
                                      (a rank out of micro-batches pads with zero gradients)

and FSDP's `clip_grad_norm_` over DTensor gradients takes each parameter's norm from its
shards' norms (torch's `_NormPartial`: x**2, summed over the shard group, **0.5) before the norm
over parameters. Floating-point addition is not associative, so one process that trained the
minibatch as one share would land on other bits (measured: weights 1.5e-8 apart after one
epoch of tiny-treegrpo, the gradient norm 7e-9, the loss 2e-8).

The checkpoint records the run's `Layout` (TrainState.shares and .shards). One process resuming
a run of W > 1 ranks keeps it: it trains the W shares one after the other, on the same
micro-batches each rank had, and adds their gradients in that rank's order (`add_shares`), and
clips with the norm the shards would compute (`sharded_total_norm`). Two addends commute, so
for W = 2 this is the 2-rank run's arithmetic exactly. For W > 2 the collective adds in its own
order (gloo's and NCCL's rings), which one process does not know: equal within rounding only.
A resume on more than one process (or on more than the shares) takes its own world as shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Layout:
    """How a run's optimizer steps sum their gradients."""

    shares: int = 1  # the ranks whose gradients each optimizer step sums
    shards: int = 0  # FSDP's shard group (ranks per replica) the gradient norm is taken over;
    # 0: replicated, every rank holds whole gradients

    @property
    def sharded(self) -> bool:
        return self.shards > 0


def run_layout(world: int, sharded: bool, replicas: int = 1) -> Layout:
    """The layout of a run started on `world` ranks; `replicas` machines under HSDP shard
    within each machine only (treegrpo/sharding.py)."""
    return Layout(world, world // replicas if sharded and world > 1 else 0)


def resumed_layout(saved: Layout, world: int, prompts_per_epoch: int, started: Layout) -> Layout:
    """The layout a resumed run trains with: the checkpoint's `saved` one when this is one
    process and the saved run had more ranks (whose prompts still split evenly), else the
    layout this run would start with (`started`)."""
    if world == 1 and saved.shares > 1 and prompts_per_epoch % saved.shares == 0:
        return saved
    return started


def share_members(minibatch: Tensor, share: int, share_size: int) -> Tensor:
    """The members of `minibatch` (indices into the epoch's edges, in tree order) that share
    `share` holds: those in its block [share * share_size, (share + 1) * share_size), in the
    minibatch's order (as `update.ppo_update` picks a rank's members)."""
    low = share * share_size
    return minibatch[(minibatch >= low) & (minibatch < low + share_size)]


def add_gradients(total: list[Tensor | None], part: Sequence[Tensor | None]) -> list[Tensor | None]:
    """`total + part`, parameter by parameter; None is a parameter no share has reached yet (a
    collective would add zeros there, which changes no bit but the sign of a zero)."""
    return [b if a is None else a if b is None else a + b for a, b in zip(total, part, strict=True)]


def sharded_total_norm(grads: Sequence[Tensor], shards: int) -> Tensor:
    """The 2-norm `clip_grad_norm_` returns for these whole gradients sharded over `shards`
    ranks by FSDP2 (dim 0 cut by torch.chunk, as `fully_shard` cuts it): each parameter's norm
    from its shards' norms, x**2 summed in rank order then **0.5 (torch's `_NormPartial`), then
    the norm of the parameters' norms. Checked bit for bit against the DTensor computation on
    2 gloo ranks (tests/core/test_shares.py)."""
    norms = []
    for grad in grads:
        pieces = list(torch.chunk(grad, shards, dim=0))
        pieces += [grad.new_empty(0)] * (shards - len(pieces))  # ranks past the last row
        squares = [torch.linalg.vector_norm(piece, 2.0) ** 2.0 for piece in pieces]
        total = squares[0]
        for square in squares[1:]:
            total = total + square
        norms.append(total ** (1.0 / 2.0))
    return torch.linalg.vector_norm(torch.stack(norms), 2.0)
