"""Deterministic samples of held-out prompts, scored: training galleries, evaluate and playground.

All three draw initial noises, follow the probability-flow ODE with the current policy, decode and
score with every reward of the run. Only where the noise comes from and how the results are
stored differ, so the sampling itself is this one function.

    initial = torch.randn((len(prompts), *adapter.latent_shape), generator=generator)
    images, scores = sample_and_score(adapter, schedule, scorer, prompts, initial, cfg, max_batch)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from treegrpo.config import RunConfig
from treegrpo.datasets.prompt_rows import Rows, first_rows, open_prompts
from treegrpo.models.base import ModelAdapter
from treegrpo.rollout import sample_ode
from treegrpo.schedules import Schedule
from treegrpo.scoring import Scorer

# A run without eval_prompts evaluates on the first this many of its training prompts.
EVAL_PROMPTS_DEFAULT = 8
# Galleries of a dataset split show its first this many rows (a named set or list: all of it).
EVAL_DATASET_ROWS = 64


def eval_rows(config: RunConfig, datasets: Path | None = None) -> Rows:
    """The run's held-out (prompt, metadata) rows: `eval_prompts` (at most EVAL_DATASET_ROWS of
    a dataset split), else the first training prompts."""
    if config.eval_prompts is not None:
        source = open_prompts(config.eval_prompts, datasets)
        return first_rows(
            source,
            len(source) if isinstance(config.eval_prompts, str | tuple) else EVAL_DATASET_ROWS,
        )
    return first_rows(open_prompts(config.prompts, datasets), EVAL_PROMPTS_DEFAULT)


def eval_prompts(config: RunConfig, datasets: Path | None = None) -> list[str]:
    """The prompts of eval_rows."""
    return [prompt for prompt, _ in eval_rows(config, datasets)]


@torch.no_grad()
def sample_and_score(
    adapter: ModelAdapter,
    schedule: Schedule,
    scorer: Scorer,
    prompts: Sequence[str],
    initial: Tensor,
    cfg_scale: float,
    max_batch: int = 0,
    metadata: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """ODE samples of `prompts` from `initial` (one noise per prompt), decoded and scored
    (with each prompt's row `metadata`, {} when None): ((n, C, H, W) images in [0, 1] on the
    model's device, name -> (n,) scores)."""
    latents = sample_ode(
        adapter,
        schedule,
        adapter.encode_prompts(list(prompts)),
        initial,
        cfg_scale,
        max_batch,
    )
    return scorer.decode_and_score(latents, prompts, metadata)
