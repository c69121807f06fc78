"""A held-out yardstick shared by every run of an experiment: the same prompts, the same noise.

A run's own gallery (Trainer.sample_gallery) draws its noise from the run's seed, so two seeds of
one method are measured on different images and the base model's reward differs by seed. Here
the noise comes from `noise_seed` alone (an experiment's, not a run's): seeds differ in training,
never in the yardstick, and the base model scores the same on every run.

    reward = heldout_reward(trainer, count=256, noise_seed=2026)  # weighted eval reward, a float

`count` images cycle through the run's eval prompts. On digits the base model's per-image
digit_judge reward has a standard deviation of 0.338 (measured on 800 images), so its mean has a
standard error under 0.005 from 4,600 images (DIGITS_SE_COUNT) and of 0.021 at 256.
It runs outside the training clock: call it between epochs, never inside one.
"""

from __future__ import annotations

import torch

from treegrpo.evaluate import sample_and_score
from treegrpo.scoring import weighted_sum
from treegrpo.trainer import Trainer

# Images for a standard error under 0.005 on the digits base reward: (0.338 / 0.005)^2 = 4,570.
DIGITS_SE_COUNT = 4600
EVAL_CHUNK = 256  # images sampled at once (memory stays flat for large counts)


def heldout_prompts(prompts: list[str], count: int) -> list[str]:
    """`count` prompts cycling through `prompts` (each phrasing equally often, give or take one)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    return [prompts[i % len(prompts)] for i in range(count)]


def heldout_scores(trainer: Trainer, count: int, noise_seed: int) -> dict[str, torch.Tensor]:
    """Every reward's per-image scores ((count,) each) on the shared noise."""
    trainer.adapter.denoiser.eval()
    prompts = heldout_prompts(trainer.eval_prompts, count)
    generator = torch.Generator().manual_seed(noise_seed)
    # (count, C, H, W): drawn at once, so a chunk size never changes which image gets which noise
    initial = torch.randn((count, *trainer.adapter.latent_shape), generator=generator)
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, count, EVAL_CHUNK):
        _, scores = sample_and_score(
            trainer.adapter,
            trainer.schedule,
            trainer.scorer(),
            prompts[start : start + EVAL_CHUNK],
            initial[start : start + EVAL_CHUNK],
            trainer.config.sampling.resolved_cfg_scale,
            trainer.config.sampling.max_batch,
        )
        for name, values in scores.items():
            parts.setdefault(name, []).append(values.detach().float().cpu())
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


def heldout_reward(trainer: Trainer, count: int, noise_seed: int) -> float:
    """The run's weighted reward (its reward weights) on `count` shared-noise held-out images."""
    scores = heldout_scores(trainer, count, noise_seed)
    means = {name: float(values.mean()) for name, values in scores.items()}
    return weighted_sum(means, trainer.reward_weights)
