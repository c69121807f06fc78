"""MixGRPO (Li et al. 2025; Tencent-Hunyuan/MixGRPO, its FLUX training scripts), as its authors
run it.

Rollout: G trajectories per prompt from the same initial noise; SDE steps (Flow-GRPO's SDE) only
inside a window of `flat.window` steps, ODE steps outside it.
Window: slides. It starts at step 0 and moves one step every `flat.slide_every` iterations
(25); it only covers steps below T - 2 (so it narrows near the end and the last two steps stay
ODE), and rolls back to 0 after the last start (`windows.sliding_window`).
Trained steps: the window's steps.
Decoded: the final state, or the clean estimate when the window covers a noisy last step.
Advantages: z-score within the prompt's group with the unbiased std, several rewards summed
without a second normalisation (`advantage_aggr`), as DanceGRPO (`dancegrpo.dancegrpo_advantages`).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import torch
from torch import Tensor

from treegrpo.algorithms.dancegrpo import dancegrpo_advantages
from treegrpo.algorithms.flat import FlatAlgorithm, same_steps_for_every_row
from treegrpo.config import RunConfig
from treegrpo.windows import sliding_window


class MixGRPO(FlatAlgorithm):
    name: ClassVar[str] = "mixgrpo"
    sde: ClassVar[str] = "flowgrpo"
    defaults: ClassVar[dict[str, Any]] = {
        "flat.timestep_fraction": 1.0,
        "flat.same_noise": True,
        "flat.global_std": False,
        "train.kl_beta": 0.0,
    }

    def window_start(self, config: RunConfig, epoch: int, rng: random.Random) -> int:
        return self.window(config, epoch)[0]

    @staticmethod
    def window(config: RunConfig, iteration: int) -> list[int]:
        return sliding_window(
            config.sampling.steps, config.flat.window, config.flat.slide_every, iteration
        )

    def _window_from(self, config: RunConfig, window_start: int) -> list[int]:
        end = min(window_start + config.flat.window, config.sampling.steps - 2)
        return list(range(window_start, end))

    def sde_steps(self, config: RunConfig, window_start: int) -> Tensor:
        sde = torch.zeros(config.sampling.steps, dtype=torch.bool)
        sde[self._window_from(config, window_start)] = True
        return sde

    def train_steps(
        self, config: RunConfig, rows: int, window_start: int, generator: torch.Generator
    ) -> Tensor:
        return same_steps_for_every_row(self._window_from(config, window_start), rows)

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
