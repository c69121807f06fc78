"""Flow-GRPO (Liu et al. 2025; yifan123/flow_grpo, scripts/train_sd3.py, config/grpo.py
`pickscore_sd3`, flow_grpo/diffusers_patch/sd3_sde_with_logprob.py), as its authors run it.

Rollout: G trajectories per prompt, each from its OWN initial noise (`same_latent = False`), an
SDE step at every step with the Flow-GRPO SDE (noise_level eta = 0.7) on the model's diffusers
grid, so the last step runs from sigma 0.009 and leaves std 0.006 of noise.
Trained steps: the first int(timestep_fraction * T) steps, timestep_fraction = 0.99 (9 of 10).
Decoded: the final state (its last step's noise is below `DECODE_NOISE_TOLERANCE`); on a grid
whose last step is noisier (`sampling.grid: dancegrpo`) the clean estimate instead.
Advantages: (R - the prompt's mean) / (std over the whole epoch + 1e-4) (`global_std = True`);
R is the weighted sum of the raw rewards.
KL: beta 0.01 (PickScore recipe; 0.04 for GenEval/OCR), in Flow-GRPO's form:
||mu - mu_ref||^2 / (2 sigma_t^2), sigma_t without the step length (`train.kl_form`).
Two optimiser steps per epoch (`train.minibatches = 2`, set by the preset).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from treegrpo.algorithms.flat import FlatAlgorithm, same_steps_for_every_row
from treegrpo.config import RunConfig


class FlowGRPO(FlatAlgorithm):
    name: ClassVar[str] = "flowgrpo"
    sde: ClassVar[str] = "flowgrpo"
    defaults: ClassVar[dict[str, Any]] = {
        "flat.timestep_fraction": 0.99,
        "flat.same_noise": False,
        "flat.global_std": True,
        "train.kl_beta": 0.01,
    }

    def train_steps(
        self, config: RunConfig, rows: int, window_start: int, generator: torch.Generator
    ) -> Tensor:
        assert config.flat.timestep_fraction is not None
        count = max(1, int(config.flat.timestep_fraction * config.sampling.steps))
        return same_steps_for_every_row(list(range(count)), rows)
