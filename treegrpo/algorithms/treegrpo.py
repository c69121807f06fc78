"""TreeGRPO (Ding & Ye, arXiv 2512.08153; official code zh-ding/TreeGRPO): one tree per prompt.

Rollout: from one root noise per tree, ODE steps to the window start s, then d SDE steps in which
every frontier node draws k children from one Gaussian, then ODE tails to the leaves
(`rollout_trees`). The window never covers the last step (s <= T - d - 1, paper Eq. 7), so every
leaf ends with an ODE step and is clean.
Trained steps: the d window steps, every edge (k^(d+1) - k)/(k - 1) per tree, each with its own
advantage; one forward at a parent prices its k children.
Decoded: the leaves (clean, see above).
Advantages: per reward, z-score over all leaves of the prompt's trees (population std, 1e-8);
weighted sum; z-score again (Algorithm 1, lines 11-13); backed up the tree by `tree.backup`.
Loss: PPO clip per edge, summed over a node's k children (`update.edge_loss`, Eq. 12).
Logged trees: on a tree epoch every node of every tree, with its advantage and image
(`tree_record.epoch_tree_records`).

Defaults and the originals (docs/FIDELITY.md has the full table):
    k = 3, d = 3, T = 10                  paper Table 1 / official train.py
    window random, r = 0.5 (Eq. 7)        paper; official code: shift, +1 every 50 epochs
    eta = 0.7 (Flow-GRPO SDE)             official code (noise level 0.7)
    backup mean, loss sum over children   official code
    clip 1e-4, adv clip 5, lr 1e-5        official code
"""

from __future__ import annotations

import random
from typing import ClassVar

import torch

from treegrpo.advantages import weighted_total
from treegrpo.algorithms.base import Algorithm, EpochContext, EpochRollout, zero_std_fraction
from treegrpo.config import RunConfig
from treegrpo.distributed import all_gather_cat, sum_over_ranks
from treegrpo.edges import tree_edges
from treegrpo.overlap import chunk_ranges
from treegrpo.rollout import TreeNoise, TreeRollout, draw_tree_noise, rollout_trees
from treegrpo.tree import TreeShape, model_evaluations, trained_edge_count
from treegrpo.tree_record import epoch_tree_records
from treegrpo.tree_scoring import advantages_from_scores
from treegrpo.windows import window_start


class TreeGRPO(Algorithm):
    name: ClassVar[str] = "treegrpo"
    sde: ClassVar[str] = "flowgrpo"

    def possible_sde_steps(self, config: RunConfig) -> range:
        return range(config.sampling.steps - 1)  # the window never covers the last step

    def window_start(self, config: RunConfig, epoch: int, rng: random.Random) -> int:
        return window_start(config.tree, config.sampling.steps, epoch, rng)

    def epoch_counts(self, config: RunConfig) -> tuple[int, int, int]:
        k, d, prompts = config.tree.k, config.tree.depth, config.prompts_per_epoch
        return (
            prompts * k**d,
            prompts * trained_edge_count(k, d),
            prompts * model_evaluations(k, d, config.sampling.steps, 0),
        )

    def roll_out(self, ctx: EpochContext) -> EpochRollout:
        config, plan, scorer = ctx.config, ctx.plan, ctx.scorer
        shape = TreeShape(
            config.tree.k, config.tree.depth, config.sampling.steps, plan.window_start
        )
        assert config.sampling.eta is not None  # resolved by the trainer
        leaves_per_tree = shape.width(shape.steps)
        # 1. Grow the trees in chunks; each chunk's leaves are scored (on threads, when the
        # reward is remote) while the next chunk grows. One chunk when nothing overlaps.
        scoring = scorer.overlapped()
        parts = []
        for part in chunk_ranges(len(plan.local), scorer.chunks):
            trees = range(plan.local.start + part.start, plan.local.start + part.stop)
            noise = TreeNoise.cat(
                [draw_tree_noise(1, shape, ctx.adapter.latent_shape, ctx.noise(t)) for t in trees]
            )
            prompts = plan.local_prompts[part.start : part.stop]
            metadata = plan.local_metadata[part.start : part.stop]
            rollout = rollout_trees(
                ctx.adapter,
                ctx.schedule,
                prompts,
                ctx.cond
                if len(part) == len(plan.local)
                else ctx.cond.select(torch.tensor(list(part))),
                shape,
                noise,
                config.sampling.resolved_cfg_scale,
                config.sampling.eta,
                config.sampling.max_batch,
                record=ctx.record_trees,
            )
            # The window ends before the last step, so every leaf ends with an ODE step: clean.
            leaves = rollout.leaves.reshape(-1, *rollout.leaves.shape[2:])  # (trees*k^d, C, H, W)
            scoring.submit(
                leaves,
                [p for p in prompts for _ in range(leaves_per_tree)],
                [row for row in metadata for _ in range(leaves_per_tree)],  # a tree's leaves
            )
            parts.append(rollout)
        rollout = TreeRollout.cat(parts)
        model_evals = int(sum_over_ranks(rollout.model_evals))
        # 2. Score the leaves.
        rewards = scoring.results()
        # 3. Advantages (Algorithm 1, lines 11-13, then the backup) normalise over a prompt's
        # group, which may span ranks (a prompt drawn twice): every rank gathers the epoch's
        # leaf rewards and window log-probs (a few numbers per leaf), computes all advantages
        # as one process would, and keeps its own.
        all_rewards = {name: all_gather_cat(r) for name, r in rewards.items()}
        all_log_probs = {step: all_gather_cat(lp) for step, lp in rollout.log_probs.items()}
        _, all_values = advantages_from_scores(
            shape, all_log_probs, all_rewards, scorer.weights, plan.groups, config.tree.backup
        )
        values = [block[plan.local.start : plan.local.stop] for block in all_values]
        # 4. Every window edge with its own advantage, for the update.
        edges = tree_edges(rollout, values)
        assert len(edges) * shape.k == len(plan.local) * trained_edge_count(shape.k, shape.depth)
        metrics = scorer.summarise(all_rewards, spread=True)
        metrics["check/zero_std_groups"] = zero_std_fraction(
            weighted_total(all_rewards, scorer.weights),
            plan.groups.repeat_interleave(leaves_per_tree),
        )
        for depth, block in enumerate(all_values):
            metrics[f"advantage/depth{depth}_mean"] = float(block.mean())
            metrics[f"advantage/depth{depth}_std"] = float(block.std(unbiased=False))
        records = None
        if ctx.record_trees:
            records = epoch_tree_records(
                ctx.adapter,
                ctx.schedule,
                rollout,
                config.tree.backup,
                rewards,
                scorer.weights,
                values,
                first_tree=plan.local.start,
            )
        images = len(plan.prompts) * leaves_per_tree
        return EpochRollout(edges, metrics, images, model_evals, records)
