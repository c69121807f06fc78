"""DanceGRPO (Xue et al. 2025; XueZeyue/DanceGRPO, fastvideo/train_grpo_flux.py and the SD /
HunyuanVideo variants), as its authors run it.

Rollout: G trajectories per prompt from the SAME initial noise (`init_same_noise`), an SDE step
at every step with DanceGRPO's own SDE (`flux_step`: std = eta sqrt(D), eta = 0.3).
Trained steps: an independent random permutation of the steps per trajectory, of which the first
int(timestep_fraction * T') are trained, T' = T - 1: the last step is never trained (its noise
never reaches the decoded image).
Decoded: the model's clean estimate x0_hat at the last step (`pred_original_sample`), never the
noisy last state.
Advantages: z-score within the prompt's group (mean and unbiased std of the G rewards, as torch's
`.std()`, + 1e-8); several rewards are z-scored each and summed with their weights, without a
second normalisation (MixGRPO's `advantage_aggr`, same codebase); one advantage for every step
of a trajectory; clip 1e-4, advantage clip 5.

Defaults and the originals (docs/FIDELITY.md cites each):
    sampling.sde = dancegrpo, eta 0.3     flux_step, `--eta 0.3`
    flat.same_noise = true                `--init_same_noise`
    flat.timestep_fraction = 0.6          `--timestep_fraction 0.6`
    last step never trained               the permutation runs over the first T - 1 steps
    group z-score, unbiased std + 1e-8    `advantages = (rewards - mean) / (std + 1e-8)`
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from treegrpo.advantages import combine_rewards
from treegrpo.algorithms.flat import FlatAlgorithm
from treegrpo.config import RunConfig
from treegrpo.rollout import FlatRollout
from treegrpo.schedules import Schedule


def dancegrpo_train_steps(
    rows: int, steps: int, fraction: float, generator: torch.Generator
) -> Tensor:
    """(rows, m) long: per trajectory, the first m = max(1, int(fraction (T - 1))) steps of an
    independent random permutation of 0 .. T - 2 (the last step left out)."""
    candidates = max(1, steps - 1)
    count = max(1, int(fraction * candidates))
    order = torch.stack([torch.randperm(candidates, generator=generator) for _ in range(rows)])
    return order[:, :count]  # (rows, m)


def dancegrpo_advantages(
    rewards: dict[str, Tensor], weights: dict[str, float], groups: Tensor
) -> Tensor:
    """(rows,): per reward, (R - group mean) / (group std + 1e-8) with torch's unbiased std (the
    table above); the rewards' weighted sum, not normalised again (MixGRPO's `advantage_aggr`,
    same codebase)."""
    return combine_rewards(rewards, weights, groups, renormalise=False, unbiased=True)


class DanceGRPO(FlatAlgorithm):
    name: ClassVar[str] = "dancegrpo"
    sde: ClassVar[str] = "dancegrpo"
    defaults: ClassVar[dict[str, Any]] = {
        "flat.timestep_fraction": 0.6,
        "flat.same_noise": True,
        "flat.global_std": False,
        "train.kl_beta": 0.0,
    }

    def train_steps(
        self, config: RunConfig, rows: int, window_start: int, generator: torch.Generator
    ) -> Tensor:
        assert config.flat.timestep_fraction is not None
        return dancegrpo_train_steps(
            rows, config.sampling.steps, config.flat.timestep_fraction, generator
        )

    def decoded_latents(
        self, config: RunConfig, rollout: FlatRollout, schedule: Schedule, sde: Tensor
    ) -> Tensor:
        """The clean estimate x0_hat of the last step, whatever that step's noise."""
        return rollout.last_x0

    def advantages(
        self,
        config: RunConfig,
        rewards: dict[str, Tensor],
        weights: dict[str, float],
        groups: Tensor,
    ) -> Tensor:
        if config.flat.global_std:  # set by hand: Flow-GRPO's epoch-wide std
            return super().advantages(config, rewards, weights, groups)
        return dancegrpo_advantages(rewards, weights, groups)
