"""The policy update: the loss of a batch of SDE edges, and the PPO steps over an epoch's edges.

`edge_loss` is the whole per-edge objective in one place; `ppo_update` only splits the epoch's
edges into minibatches, accumulates, reduces over ranks and steps the optimizer.

Against the paper (TreeGRPO, arXiv 2512.08153, Eq. 12: the PPO-clipped objective summed over a
tree's SDE edges, each with its own advantage; docs/TREEGRPO.md §6) and the official code
(zh-ding/TreeGRPO train.py, `RLTrainer.treegrpo_update` and `RLTrainer.train`):

  edge_loss                                official train.py
  1. v = model(x_parent, t, c) with CFG    `noise_pred_uncond + self.config.sample.guidance_scale
                                            * (noise_pred_text - noise_pred_uncond)`
  2. (mu, std) of the SDE step, and        `_, log_probs = flow_match_euler_discrete_step_with_
     log p_theta of all k children from     logprob(..., prev_sample=batch["output_latents"][0],
     that one forward                       ...)`, then `for log_prob, old_log_prob, advantage in
                                            zip(log_probs, batch["log_prob"][0], ...)`
  3. A = clamp(A(e), -adv_clip, adv_clip)  `advantages = torch.clamp(advantages,
                                            -self.config.training.adv_clip_max, ...)`
  4. ratio = exp(log p_theta - log p_old)  `ratio = torch.exp(log_prob - log_prob_old)`
  5. max(-A ratio,                         `unclipped_loss = -advantages * ratio`,
         -A clamp(ratio, 1 - eps, 1 + eps)) `clipped_loss = -advantages * torch.clamp(ratio,
                                            1.0 - ...clip_range, 1.0 + ...clip_range)`,
                                            `torch.maximum(unclipped_loss, clipped_loss)`
  6. summed over the node's k children     `loss_sum += loss`; `if ... loss_agg == "mean":
     (`train.loss_agg`; mean optional)      loss_sum /= len(log_probs)`
  7. KL to a reference (`train.kl_beta`)   absent from the paper and the official code: Flow-GRPO's
                                            ||mu - mu_ref||^2 / (2 sigma_t^2), on in its recipe only

  ppo_update                               official train.py
  minibatches: `train.minibatches`         `gradient_accumulation_steps = max(1, total_samples //
  optimizer steps per epoch, each node's    2)` with one node per batch: two steps per epoch, each
  loss divided by its minibatch's size      loss divided by the accumulation count (accelerate)
  clip_grad_norm_(max_grad_norm)           `clip_grad_norm_(..., max_norm=...max_grad_norm)`

With `sharded` (train.sharding: fsdp, treegrpo/sharding.py) FSDP sums the gradients inside each
backward, and every rank runs as many micro-batch forwards as the rank with the most, the
missing ones on a stand-in edge with weight 0 (verl's `same_micro_num_in_dp` padding): a FSDP
forward is a collective, so a rank with fewer would leave the others waiting in an all-gather.

One process resuming a checkpoint of W > 1 ranks (`layout`, treegrpo/shares.py) trains the W
ranks' shares of each minibatch one after the other and adds their gradients in the order the
ranks' reduction did, so that a 2-rank run continues on one process bit for bit. It holds up to
three copies of the gradients while it adds them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from treegrpo.config import SamplingConfig, TrainConfig
from treegrpo.distributed import Ranks, all_gather_cat, all_reduce_gradients, sum_over_ranks
from treegrpo.edges import EdgeBatch
from treegrpo.losses import aggregate_children, kl_to_reference, ppo_clip_loss, ratio_stats
from treegrpo.models.base import Conditioning, ModelAdapter
from treegrpo.optim import clip_targets
from treegrpo.schedules import Schedule
from treegrpo.sharding import full_norm, max_over_ranks
from treegrpo.shares import Layout, add_gradients, sharded_total_norm, share_members
from treegrpo.stepping import gaussian_log_prob


@dataclass
class EdgeLoss:
    """The loss of P parent states and their m children each."""

    per_parent: Tensor  # (P,) PPO-clipped loss, aggregated over the parent's children
    kl: Tensor | None  # (P,) KL to the reference policy, when there is one
    ratio: Tensor  # (P, m) pi_theta / pi_old of each child
    log_prob: Tensor  # (P, m) log pi_theta of each child


def edge_loss(
    adapter: ModelAdapter,
    schedule: Schedule,
    batch: EdgeBatch,
    cond: Conditioning,
    sampling: SamplingConfig,
    train: TrainConfig,
    reference: nn.Module | None = None,
) -> EdgeLoss:
    """The objective of a batch of edges under the current policy (steps 1-7 above).

    `cond` holds one row per parent (the parents' prompts); `reference` is the frozen reference
    denoiser of the optional KL term, None without one.
    """
    assert sampling.eta is not None
    # 1-2. One forward at each parent gives the Gaussian of all its children.
    out = adapter.predict(batch.parents, batch.steps, schedule, cond, sampling.resolved_cfg_scale)
    mean, std = schedule.gaussian(batch.parents, out, batch.steps, sampling.eta)
    log_prob = gaussian_log_prob(
        batch.children, mean[:, None], std[:, None], batch_dims=2
    )  # (P, m)
    # 3-5. Clamped advantages, ratio, PPO clip.
    per_child, ratio = ppo_clip_loss(
        log_prob, batch.log_prob_old, batch.advantages, train.clip_range, train.adv_clip
    )
    # 6. Over the node's children.
    per_parent = aggregate_children(per_child, train.loss_agg)
    # 7. The reference policy's mean at the same parents.
    kl = None
    if reference is not None:
        with torch.no_grad():
            ref_out = adapter.predict(
                batch.parents,
                batch.steps,
                schedule,
                cond,
                sampling.resolved_cfg_scale,
                denoiser=reference,
            )
            ref_mean, _ = schedule.gaussian(batch.parents, ref_out, batch.steps, sampling.eta)
        scale = std if train.kl_form == "exact" else schedule.kl_scale(std, batch.steps)
        kl = kl_to_reference(mean, ref_mean, scale)
    return EdgeLoss(per_parent, kl, ratio, log_prob)


def minibatch_loss(terms: EdgeLoss, minibatch_size: int, train: TrainConfig) -> Tensor:
    """A micro-batch's share of its minibatch's loss: divided by the whole minibatch's size, so
    that the micro-batches' gradients, summed (over chunks and ranks), are the minibatch's."""
    loss = terms.per_parent.sum() / minibatch_size
    if terms.kl is not None:
        loss = loss + float(train.kl_beta or 0.0) * terms.kl.sum() / minibatch_size
    return loss


@dataclass
class _Log:
    """What one rank (or one share of a rank's work, `treegrpo/shares.py`) logs of its chunks."""

    losses: list[float] = field(default_factory=list)
    kls: list[Tensor] = field(default_factory=list)
    ratios: list[Tensor] = field(default_factory=list)
    new_lps: list[Tensor] = field(default_factory=list)
    old_lps: list[Tensor] = field(default_factory=list)
    advantages: list[Tensor] = field(default_factory=list)
    first_deviation: Tensor = field(default_factory=lambda: torch.zeros(()))

    def record(self, terms: EdgeLoss, batch: EdgeBatch, loss: Tensor, first: bool) -> None:
        self.losses.append(float(loss.detach()))
        if terms.kl is not None:
            self.kls.append(terms.kl.detach())
        ratio = terms.ratio.detach()
        self.ratios.append(ratio.flatten())
        self.advantages.append(batch.advantages.flatten())
        if first:
            # Before the first optimiser step the policy is the rollout's: any gap
            # between rollout and training log-probs shows here as ratio != 1.
            deviation = (ratio - 1.0).abs().max().cpu()
            self.first_deviation = torch.maximum(self.first_deviation, deviation)
        self.new_lps.append(terms.log_prob.detach().flatten())
        self.old_lps.append(batch.log_prob_old.flatten())


def ppo_update(
    adapter: ModelAdapter,
    schedule: Schedule,
    optimizer: torch.optim.Optimizer,
    parameters: list[nn.Parameter],
    edges: EdgeBatch,
    cond: Conditioning,
    generator: torch.Generator,
    sampling: SamplingConfig,
    train: TrainConfig,
    ranks: Ranks,
    reference: nn.Module | None = None,
    sharded: bool = False,
    layout: Layout | None = None,
    after_step: Callable[[int], object] | None = None,
) -> dict[str, float]:
    """`train.minibatches` PPO-clipped optimizer steps over the epoch's edges; their metrics.

    `edges` are this rank's block of the epoch's edges, in tree order. The permutation and
    minibatches are drawn over the epoch's edges on every rank alike; a rank trains the
    members of each minibatch it holds, every loss is divided by the whole minibatch's
    size, and summing the gradients over ranks gives exactly the one-process gradient.

    `layout`: the run's shares (treegrpo/shares.py). One process resuming a run of W > 1 ranks
    trains the W ranks' shares one after the other and sums them as their reduction did.
    `after_step(number)` runs after the epoch's optimizer step `number` (the EMA's update).
    """
    shares = layout.shares if layout is not None and ranks.world == 1 else 1
    first = ranks.rank * len(edges)
    order = torch.randperm(len(edges) * ranks.world, generator=generator)
    logs = [_Log() for _ in range(shares)]
    grad_norms = []
    padded = 0

    def train_chunk(chunk: Tensor, log: _Log, minibatch_size: int, first_minibatch: bool) -> None:
        batch = edges.select(chunk)
        terms = edge_loss(
            adapter, schedule, batch, cond.select(batch.prompt_index), sampling, train, reference
        )
        loss = minibatch_loss(terms, minibatch_size, train)
        loss.backward()
        log.record(terms, batch, loss, first_minibatch)

    for number, minibatch in enumerate(order.chunk(train.minibatches)):
        optimizer.zero_grad(set_to_none=True)
        if shares > 1:
            assert layout is not None
            grad_norm = _step_as_shares(
                minibatch,
                len(edges),
                layout,
                parameters,
                optimizer,
                train,
                logs,
                number == 0,
                train_chunk,
            )
            grad_norms.append(grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step(number)
            continue
        mine = minibatch[(minibatch >= first) & (minibatch < first + len(edges))] - first
        micro = train.micro_batch or max(1, len(mine))
        chunks = list(mine.split(micro)) if len(mine) else []
        # Agreed before any forward: a rank with fewer chunks pads after its own.
        padding = max_over_ranks(len(chunks)) - len(chunks) if sharded else 0
        padded += padding
        for chunk in chunks:
            train_chunk(chunk, logs[0], len(minibatch), number == 0)
        if sharded:
            # FSDP summed each backward's gradients over ranks already; even out the forwards.
            for _ in range(padding):
                stand_in = edges.select(torch.zeros(1, dtype=torch.long))
                terms = edge_loss(
                    adapter,
                    schedule,
                    stand_in,
                    cond.select(stand_in.prompt_index),
                    sampling,
                    train,
                    reference,
                )
                (0.0 * minibatch_loss(terms, len(minibatch), train)).backward()
            grad_norm = full_norm(torch.nn.utils.clip_grad_norm_(parameters, train.max_grad_norm))
        else:
            all_reduce_gradients(parameters)
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(
                    clip_targets(optimizer, parameters), train.max_grad_norm
                )
            )
        grad_norms.append(grad_norm)
        optimizer.step()
        # Free the gradients now: otherwise they stay allocated through the next rollout.
        optimizer.zero_grad(set_to_none=True)
        if after_step is not None:
            after_step(number)
    # The epoch's statistics, not this rank's: gather the per-edge values (in rank order, the
    # shares' order), sum the losses.
    ratio, new_lp, old_lp = (
        all_gather_cat(torch.cat([t for log in logs for t in getattr(log, name)]))
        for name in ("ratios", "new_lps", "old_lps")
    )
    metrics = ratio_stats(ratio, new_lp, old_lp, train.clip_range)
    loss_sum = sum(logs[0].losses)
    for log in logs[1:]:  # as the all-reduce adds the ranks' sums
        loss_sum += sum(log.losses)
    metrics["loss"] = sum_over_ranks(loss_sum) / train.minibatches
    metrics["grad_norm"] = sum(grad_norms) / len(grad_norms)
    metrics["trained_edges"] = float(ratio.numel())
    all_advantages = all_gather_cat(torch.cat([t for log in logs for t in log.advantages]))
    metrics["check/adv_clipped"] = float((all_advantages.abs() > train.adv_clip).float().mean())
    deviation = torch.stack([log.first_deviation for log in logs]).max()
    metrics["check/ratio_dev_first_minibatch"] = float(all_gather_cat(deviation.reshape(1)).max())
    metrics["check/clip_fraction"] = metrics["clip_fraction"]
    if sharded:
        # Forwards spent only to keep the ranks in step: what uneven minibatches cost.
        metrics["sharding/padding_forwards"] = sum_over_ranks(padded)
    if reference is not None:
        kls = torch.cat([t for log in logs for t in log.kls])
        metrics["kl"] = float(all_gather_cat(kls).mean())
    return metrics


def _step_as_shares(
    minibatch: Tensor,
    edge_count: int,
    layout: Layout,
    parameters: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    train: TrainConfig,
    logs: list[_Log],
    first_minibatch: bool,
    train_chunk: Callable[[Tensor, _Log, int, bool], None],
) -> float:
    """One process's minibatch gradient as `layout.shares` ranks would sum it (treegrpo/
    shares.py), clipped as they would clip it; returns the gradient norm. Each share trains
    the micro-batches its rank would have, on the edges of its block."""
    share_size = edge_count // layout.shares
    micro_chunks = []
    for share in range(layout.shares):
        mine = share_members(minibatch, share, share_size)
        micro = train.micro_batch or max(1, len(mine))
        micro_chunks.append(list(mine.split(micro)) if len(mine) else [])

    def gradient_of(share: int, chunks: list[Tensor]) -> list[Tensor | None]:
        for param in parameters:
            param.grad = None
        for chunk in chunks:
            train_chunk(chunk, logs[share], len(minibatch), first_minibatch)
        return [param.grad for param in parameters]

    total: list[Tensor | None] = [None] * len(parameters)
    if layout.sharded:
        # FSDP: micro-batch i of every rank summed (one reduce-scatter), then accumulated.
        for index in range(max(len(chunks) for chunks in micro_chunks)):
            step: list[Tensor | None] = [None] * len(parameters)
            for share, chunks in enumerate(micro_chunks):
                if index < len(chunks):
                    step = add_gradients(step, gradient_of(share, [chunks[index]]))
            total = add_gradients(total, step)
    else:
        # Replicated: each rank's micro-batches accumulated, then one all-reduce of the totals.
        for share, chunks in enumerate(micro_chunks):
            total = add_gradients(total, gradient_of(share, chunks))
    for param, grad in zip(parameters, total, strict=True):
        param.grad = grad
    if not layout.sharded:
        return float(
            torch.nn.utils.clip_grad_norm_(clip_targets(optimizer, parameters), train.max_grad_norm)
        )
    reached = [param for param in parameters if param.grad is not None]
    norm = sharded_total_norm([param.grad for param in reached], layout.shards)  # type: ignore[misc]
    torch.nn.utils.clip_grads_with_norm_(reached, train.max_grad_norm, norm)
    return float(norm)
