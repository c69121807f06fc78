"""Held-out sampling (treegrpo/evaluate.py), shared by training galleries and the evaluate and
playground jobs: tested here without a worker or a trainer."""

from __future__ import annotations

import dataclasses

import torch

from treegrpo.algorithms import resolve_for_model
from treegrpo.config import resolve_config
from treegrpo.evaluate import EVAL_PROMPTS_DEFAULT, eval_prompts, sample_and_score
from treegrpo.models.tiny import TinyAdapter
from treegrpo.prompts import resolve_prompts
from treegrpo.rewards.registry import load_rewards
from treegrpo.rollout import sample_ode
from treegrpo.scoring import Scorer


def test_eval_prompts_are_the_held_out_set_else_the_first_training_prompts() -> None:
    config = resolve_config("tiny-treegrpo")
    assert eval_prompts(config) == list(resolve_prompts("tiny-heldout"))
    without = dataclasses.replace(config, eval_prompts=None, prompts="digits")
    assert eval_prompts(without) == list(resolve_prompts("digits"))[:EVAL_PROMPTS_DEFAULT]


def test_sample_and_score_is_the_ode_sample_decoded_and_scored() -> None:
    config = resolve_config("tiny-treegrpo")
    adapter = TinyAdapter("flow")
    config, schedule = resolve_for_model(config, adapter)
    scorer = Scorer(adapter.decode, load_rewards(config.reward_weights), config.reward_weights)
    prompts = ["a", "b", "a"]
    initial = torch.randn((3, *adapter.latent_shape), generator=torch.Generator().manual_seed(0))
    cfg = config.sampling.resolved_cfg_scale
    images, scores = sample_and_score(adapter, schedule, scorer, prompts, initial, cfg)
    with torch.no_grad():
        latents = sample_ode(adapter, schedule, adapter.encode_prompts(prompts), initial, cfg)
    torch.testing.assert_close(images, adapter.decode(latents), rtol=0, atol=0)
    # brightness: the mean pixel of each image
    torch.testing.assert_close(scores["brightness"], images.flatten(1).mean(dim=1))
    again, _ = sample_and_score(adapter, schedule, scorer, prompts, initial, cfg, max_batch=2)
    torch.testing.assert_close(again, images)  # batching changes nothing but rounding
    assert not images.requires_grad
