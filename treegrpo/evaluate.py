"""Deterministic samples of held-out prompts, scored: training galleries, evaluate and playground.

All three draw initial noises, follow the probability-flow ODE with the current policy, decode and
score with every reward of the run. Only where the noise comes from and how the results are
stored differ, so the sampling itself is this one function.

    initial = torch.randn((len(prompts), *adapter.latent_shape), generator=generator)
    images, scores = sample_and_score(adapter, schedule, scorer, prompts, initial, cfg, max_batch)

An evaluation (the evaluate job) follows Flow-GRPO's (scripts/train_sd3.py `eval`): the eval
rewards (`eval.rewards`), more steps (`eval.steps`, RunConfig.eval_steps), fixed noises per prompt
(`eval_noise`: prompt i's depend only on eval.seed and i) and, where `train.ema` is on, the EMA
weights. Each reward's mean comes with a Student t interval over the prompts (`score_intervals`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from treegrpo.config import RunConfig
from treegrpo.datasets.prompt_rows import Rows, first_rows, open_prompts
from treegrpo.models.base import ModelAdapter
from treegrpo.rollout import sample_ode
from treegrpo.schedules import Schedule
from treegrpo.scoring import Scorer
from treegrpo.seeds import eval_generator
from treegrpo.statistics import MeanInterval, mean_interval

# A run without eval_prompts evaluates on the first this many of its training prompts.
EVAL_PROMPTS_DEFAULT = 8
# Galleries of a dataset split show its first this many rows (a named set or list: all of it).
EVAL_DATASET_ROWS = 64


T = TypeVar("T")


def eval_rows(config: RunConfig, datasets: Path | None = None, whole_split: bool = False) -> Rows:
    """The run's held-out (prompt, metadata) rows: `eval_prompts` (of a dataset split, its first
    EVAL_DATASET_ROWS for galleries, all of it with `whole_split`, as Flow-GRPO evaluates on its
    whole test set), else the first training prompts."""
    if config.eval_prompts is not None:
        source = open_prompts(config.eval_prompts, datasets)
        whole = whole_split or isinstance(config.eval_prompts, str | tuple)
        return first_rows(source, len(source) if whole else EVAL_DATASET_ROWS)
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


def per_image(items: Sequence[T], images_per_prompt: int) -> list[T]:
    """One entry per image: each prompt's item (its prompt, its metadata) `images_per_prompt`
    times, prompt by prompt."""
    return [item for item in items for _ in range(images_per_prompt)]


def eval_noise(
    eval_seed: int, prompts: int, images_per_prompt: int, latent_shape: Sequence[int]
) -> Tensor:
    """The initial noises of `per_image` rows: (prompts * images_per_prompt, *latent_shape), prompt
    i's drawn from its own generator (seeds.eval_generator), so they do not change with the
    run's seed, the number of prompts or a chunking of the evaluation."""
    return torch.cat(
        [
            torch.randn((images_per_prompt, *latent_shape), generator=eval_generator(eval_seed, i))
            for i in range(prompts)
        ]
    )  # (prompts * images_per_prompt, *latent_shape)


def eval_schedule(adapter: ModelAdapter, config: RunConfig) -> Schedule:
    """The ODE schedule of an evaluation: the eval steps (RunConfig.eval_steps) on the grid and
    SDE of `config`, which must be resolved for the model (algorithms.resolve_for_model)."""
    sampling = config.sampling
    if sampling.sde is None:
        raise ValueError("resolve the config for its model before building its eval schedule")
    return adapter.make_schedule(config.eval_steps, sampling.grid, sampling.sde)


def score_intervals(
    scores: Mapping[str, Tensor], images_per_prompt: int, confidence: float = 0.95
) -> dict[str, MeanInterval]:
    """Per reward, the mean over prompts with its Student t interval. A prompt's images share
    the prompt, so the unit is the prompt: its images' mean is one value (rows as `per_image`)."""
    out = {}
    for name, values in scores.items():
        per_prompt = values.detach().double().cpu().reshape(-1, images_per_prompt).mean(dim=1)
        out[name] = mean_interval(per_prompt.tolist(), confidence)
    return out
