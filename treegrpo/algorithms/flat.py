"""The flat GRPO baselines' shared epoch: G trajectories per prompt, scored at the end.

Each baseline (`dancegrpo.py`, `flowgrpo.py`, `mixgrpo.py`) says which steps are stochastic,
which it trains (per trajectory), what it decodes and how it normalises advantages; this module
runs the rollout, the scoring and the bookkeeping they share.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from treegrpo.advantages import combine_rewards, global_std_advantages, weighted_total
from treegrpo.algorithms.base import Algorithm, EpochRollout, decoded_latents, zero_std_fraction
from treegrpo.config import RunConfig
from treegrpo.distributed import all_gather_cat, sum_over_ranks
from treegrpo.edges import flat_edges
from treegrpo.rollout import FlatNoise, draw_flat_noise, rollout_flat

if TYPE_CHECKING:
    from treegrpo.models.base import Conditioning
    from treegrpo.trainer import EpochPlan, Trainer


class FlatAlgorithm(Algorithm):
    # DanceGRPO decodes the clean estimate of its last step whatever that step's noise.
    decode_clean_estimate: ClassVar[bool] = False
    # DanceGRPO's advantage rule, which MixGRPO inherits: a group z-score with torch's unbiased
    # std + 1e-8 per reward, summed with the weights and not normalised again (MixGRPO's
    # `advantage_aggr`). Otherwise Algorithm 1's: population std, the sum normalised again.
    dancegrpo_advantages: ClassVar[bool] = False

    def sde_steps(self, config: RunConfig, window_start: int) -> Tensor:
        """(T,) bool: which steps sample from the SDE (the rest are ODE steps); all of them
        unless the algorithm has a window."""
        return torch.ones(config.sampling.steps, dtype=torch.bool)

    @abstractmethod
    def train_steps(
        self, config: RunConfig, rows: int, window_start: int, generator: torch.Generator
    ) -> Tensor:
        """(rows, m) long: the steps each of the epoch's `rows` trajectories trains."""

    def advantages(
        self,
        config: RunConfig,
        rewards: dict[str, Tensor],
        weights: dict[str, float],
        groups: Tensor,
    ) -> Tensor:
        """(rows,) advantages of the epoch's trajectories; `groups` are their prompt ids.
        `flat.global_std` divides by the epoch's std (Flow-GRPO)."""
        if config.flat.global_std:
            return global_std_advantages(rewards, weights, groups)
        if self.dancegrpo_advantages:
            return combine_rewards(rewards, weights, groups, renormalise=False, unbiased=True)
        return combine_rewards(rewards, weights, groups)

    def epoch_counts(self, config: RunConfig) -> tuple[int, int, int]:
        images = config.prompts_per_epoch * config.flat.group_size
        trained = self.train_steps(config, 1, 0, torch.Generator().manual_seed(0)).shape[1]
        return images, images * trained, images * config.sampling.steps

    def roll_out(self, trainer: Trainer, plan: EpochPlan, cond: Conditioning) -> EpochRollout:
        config = trainer.config
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
                    trainer.adapter.latent_shape,
                    trainer.noise_generator(plan.epoch, i),
                    same_noise=config.flat.same_noise,
                )
                for i in plan.local
            ]
        )
        rollout = rollout_flat(
            trainer.adapter,
            trainer.schedule,
            plan.local_prompts,
            cond,
            group,
            sde,
            noise,
            config.sampling.resolved_cfg_scale,
            config.sampling.eta,
            config.sampling.max_batch,
        )
        trainer.state.model_evals += int(sum_over_ranks(rollout.model_evals))
        if self.decode_clean_estimate:
            latents = rollout.last_x0
        else:
            latents = decoded_latents(
                rollout.leaves,
                rollout.last_x0,
                trainer.schedule,
                bool(sde[-1]),
                config.sampling.eta,
            )
        row_prompts = [p for p in plan.local_prompts for _ in range(group)]
        rewards = trainer.score(latents, row_prompts)
        # Group statistics over the whole epoch's rows; this rank keeps its own.
        all_rewards = {name: all_gather_cat(r) for name, r in rewards.items()}
        row_groups = plan.groups.repeat_interleave(group)
        all_advantages = self.advantages(config, all_rewards, trainer.reward_weights, row_groups)
        advantages = all_advantages[plan.local.start * group : plan.local.stop * group]
        edges = flat_edges(rollout, advantages, train_steps)
        metrics = trainer.reward_metrics(all_rewards)
        metrics["advantage/mean"] = float(all_advantages.mean())
        metrics["advantage/std"] = float(all_advantages.std(unbiased=False))
        metrics["check/zero_std_groups"] = zero_std_fraction(
            weighted_total(all_rewards, trainer.reward_weights), row_groups
        )
        return EpochRollout(edges, metrics, int(all_advantages.shape[0]))


def same_steps_for_every_row(steps: list[int], rows: int) -> Tensor:
    """(rows, m) long: every trajectory trains `steps`."""
    return torch.tensor(steps, dtype=torch.long).expand(rows, len(steps)).clone()
