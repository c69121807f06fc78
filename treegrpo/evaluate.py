"""Deterministic samples of held-out prompts, scored: training galleries, evaluate and playground.

All three draw initial noises, follow the probability-flow ODE with the current policy, decode and
score with every reward of the run. Only where the noise comes from and how the results are
stored differ, so the sampling itself is this one function.

    initial = torch.randn((len(prompts), *adapter.latent_shape), generator=generator)
    images, scores = sample_and_score(adapter, schedule, scorer, prompts, initial, cfg, max_batch)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from treegrpo.config import RunConfig
from treegrpo.models.base import ModelAdapter
from treegrpo.prompts import resolve_prompts
from treegrpo.rollout import sample_ode
from treegrpo.schedules import Schedule
from treegrpo.scoring import Scorer

# A run without eval_prompts evaluates on the first this many of its training prompts.
EVAL_PROMPTS_DEFAULT = 8


def eval_prompts(config: RunConfig) -> list[str]:
    """The run's held-out prompts: `eval_prompts`, else the first training prompts."""
    if config.eval_prompts is not None:
        return list(resolve_prompts(config.eval_prompts))
    return list(resolve_prompts(config.prompts))[:EVAL_PROMPTS_DEFAULT]


@torch.no_grad()
def sample_and_score(
    adapter: ModelAdapter,
    schedule: Schedule,
    scorer: Scorer,
    prompts: Sequence[str],
    initial: Tensor,
    cfg_scale: float,
    max_batch: int = 0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """ODE samples of `prompts` from `initial` (one noise per prompt), decoded and scored:
    ((n, C, H, W) images in [0, 1] on the model's device, name -> (n,) scores)."""
    latents = sample_ode(
        adapter,
        schedule,
        adapter.encode_prompts(list(prompts)),
        initial,
        cfg_scale,
        max_batch,
    )
    return scorer.decode_and_score(latents, prompts)
