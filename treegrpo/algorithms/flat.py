"""The flat GRPO baselines' shared epoch: G trajectories per prompt, scored at the end.

Each baseline (`dancegrpo.py`, `flowgrpo.py`, `mixgrpo.py`) overrides what makes it itself:
which steps are stochastic (`sde_steps`), which it trains per trajectory (`train_steps`), which
latent it decodes (`decoded_latents`) and how rewards become advantages (`advantages`). This
module runs the rollout, the scoring and the bookkeeping they share, and gives the defaults
of Algorithm 1 where a baseline says nothing.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor

from treegrpo.advantages import combine_rewards, global_std_advantages, weighted_total
from treegrpo.algorithms.base import (
    Algorithm,
    EpochContext,
    EpochRollout,
    decoded_latents,
    zero_std_fraction,
)
from treegrpo.config import RunConfig
from treegrpo.distributed import all_gather_cat, sum_over_ranks
from treegrpo.edges import flat_edges
from treegrpo.rollout import FlatNoise, FlatRollout, draw_flat_noise, rollout_flat
from treegrpo.schedules import Schedule


class FlatAlgorithm(Algorithm):
    def sde_steps(self, config: RunConfig, window_start: int) -> Tensor:
        """(T,) bool: which steps sample from the SDE (the rest are ODE steps); all of them
        unless the algorithm has a window."""
        return torch.ones(config.sampling.steps, dtype=torch.bool)

    @abstractmethod
    def train_steps(
        self, config: RunConfig, rows: int, window_start: int, generator: torch.Generator
    ) -> Tensor:
        """(rows, m) long: the steps each of the epoch's `rows` trajectories trains."""

    def decoded_latents(
        self, config: RunConfig, rollout: FlatRollout, schedule: Schedule, sde: Tensor
    ) -> Tensor:
        """The latents to decode and score: the final states, or the clean estimate of the last
        step where that step was stochastic and its noise would show (base.decoded_latents)."""
        assert config.sampling.eta is not None
        return decoded_latents(
            rollout.leaves, rollout.last_x0, schedule, bool(sde[-1]), config.sampling.eta
        )

    def advantages(
        self,
        config: RunConfig,
        rewards: dict[str, Tensor],
        weights: dict[str, float],
        groups: Tensor,
    ) -> Tensor:
        """(rows,) advantages of the epoch's trajectories; `groups` are their prompt ids.
        Algorithm 1's: each reward z-scored in its prompt group (population std), the weighted
        sum z-scored again; `flat.global_std` divides by the epoch's std instead (Flow-GRPO)."""
        if config.flat.global_std:
            return global_std_advantages(rewards, weights, groups)
        return combine_rewards(rewards, weights, groups)

    def epoch_counts(self, config: RunConfig) -> tuple[int, int, int]:
        images = config.prompts_per_epoch * config.flat.group_size
        trained = self.train_steps(config, 1, 0, torch.Generator().manual_seed(0)).shape[1]
        return images, images * trained, images * config.sampling.steps

    def roll_out(self, ctx: EpochContext) -> EpochRollout:
        config, plan = ctx.config, ctx.plan
        steps, group = config.sampling.steps, config.flat.group_size
        assert config.sampling.eta is not None and config.flat.same_noise is not None
        sde = self.sde_steps(config, plan.window_start)
        # Every rank draws the whole epoch's trained steps alike and keeps its own rows.
        all_train_steps = self.train_steps(
            config, len(plan.prompts) * group, plan.window_start, plan.generator
        )
        train_steps = all_train_steps[plan.local.start * group : plan.local.stop * group]
        noise = FlatNoise.cat(
            [
                draw_flat_noise(
                    1,
                    group,
                    steps,
                    ctx.adapter.latent_shape,
                    ctx.noise(i),
                    same_noise=config.flat.same_noise,
                )
                for i in plan.local
            ]
        )
        rollout = rollout_flat(
            ctx.adapter,
            ctx.schedule,
            plan.local_prompts,
            ctx.cond,
            group,
            sde,
            noise,
            config.sampling.resolved_cfg_scale,
            config.sampling.eta,
            config.sampling.max_batch,
        )
        model_evals = int(sum_over_ranks(rollout.model_evals))
        latents = self.decoded_latents(config, rollout, ctx.schedule, sde)
        row_prompts = [p for p in plan.local_prompts for _ in range(group)]
        row_metadata = [row for row in plan.local_metadata for _ in range(group)]
        rewards = ctx.scorer.score(latents, row_prompts, row_metadata)
        # Group statistics over the whole epoch's rows; this rank keeps its own.
        all_rewards = {name: all_gather_cat(r) for name, r in rewards.items()}
        row_groups = plan.groups.repeat_interleave(group)
        weights = ctx.scorer.weights
        all_advantages = self.advantages(config, all_rewards, weights, row_groups)
        advantages = all_advantages[plan.local.start * group : plan.local.stop * group]
        edges = flat_edges(rollout, advantages, train_steps)
        metrics = ctx.scorer.summarise(all_rewards, spread=True)
        metrics["advantage/mean"] = float(all_advantages.mean())
        metrics["advantage/std"] = float(all_advantages.std(unbiased=False))
        metrics["check/zero_std_groups"] = zero_std_fraction(
            weighted_total(all_rewards, weights), row_groups
        )
        return EpochRollout(edges, metrics, int(all_advantages.shape[0]), model_evals)


def same_steps_for_every_row(steps: list[int], rows: int) -> Tensor:
    """(rows, m) long: every trajectory trains `steps`."""
    return torch.tensor(steps, dtype=torch.long).expand(rows, len(steps)).clone()
