"""Held-out sampling (treegrpo/evaluate.py), shared by training galleries and the evaluate and
playground jobs: tested here without a worker or a trainer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from treegrpo.algorithms import resolve_for_model
from treegrpo.config import SD_EVAL_STEPS, ConfigError, RunConfig, resolve_config
from treegrpo.evaluate import (
    EVAL_PROMPTS_DEFAULT,
    eval_noise,
    eval_prompts,
    eval_schedule,
    per_image,
    sample_and_score,
    score_intervals,
)
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


def test_eval_rewards_default_to_the_training_reward_and_may_differ() -> None:
    config = resolve_config("digits-treegrpo")
    assert config.eval_reward_weights == {"digit_judge": 1.0}
    three = resolve_config(
        "digits-treegrpo",
        {"eval.rewards": {"digit_judge": 1.0, "boldness": 1.0, "contrast": 1.0}},
    )
    assert set(three.eval_reward_weights) == {"digit_judge", "boldness", "contrast"}
    assert three.reward_weights == {"digit_judge": 1.0}  # training is untouched
    assert RunConfig.from_dict(three.to_dict()) == three


def test_options_of_an_eval_only_reward_are_accepted_and_unused_ones_refused() -> None:
    overrides = {"eval.rewards": "clipscore", "reward_options": {"clipscore": {"path": "/m"}}}
    assert resolve_config("digits-treegrpo", overrides).reward_options == {
        "clipscore": {"path": "/m"}
    }
    with pytest.raises(ConfigError, match=r"reward_options\.clipscore"):
        resolve_config("digits-treegrpo", {"reward_options": {"clipscore": {"path": "/m"}}})


def test_eval_steps_default_to_forty_on_real_models_and_training_steps_on_built_in_ones() -> None:
    assert resolve_config("digits-treegrpo").eval_steps == 10  # the training steps
    assert resolve_config("sd35-treegrpo").eval_steps == SD_EVAL_STEPS == 40  # Flow-GRPO
    assert resolve_config("sd35-treegrpo", {"eval.steps": 12}).eval_steps == 12


def test_eval_noise_is_fixed_per_prompt_whatever_the_run_seed_or_prompt_count() -> None:
    shape = (1, 4, 4)
    three = eval_noise(7, 3, 2, shape)  # (3 prompts x 2 images, 1, 4, 4)
    assert three.shape == (6, *shape)
    five = eval_noise(7, 5, 2, shape)
    torch.testing.assert_close(five[:6], three, rtol=0, atol=0)  # prompt i keeps its noises
    assert not torch.equal(eval_noise(8, 3, 2, shape), three)  # another eval.seed, other noises
    assert not torch.equal(three[0], three[1])  # a prompt's images differ
    assert per_image(["a", "b"], 2) == ["a", "a", "b", "b"]


def test_score_intervals_take_the_prompt_as_the_unit() -> None:
    # Two prompts x two images: prompt means 0.2 and 0.6 -> mean 0.4, std sqrt(0.08) = 0.282843,
    # t_{0.975, 1} = 12.706205; half = 12.706205 * 0.282843 / sqrt(2) = 2.541241
    scores = {"r": torch.tensor([0.1, 0.3, 0.5, 0.7])}
    interval = score_intervals(scores, images_per_prompt=2)["r"]
    assert interval.n == 2
    assert interval.mean == pytest.approx(0.4)
    assert interval.std == pytest.approx(0.282843, abs=1e-6)
    assert interval.high - interval.mean == pytest.approx(2.541241, abs=1e-5)


def test_the_eval_schedule_has_the_eval_steps() -> None:
    adapter = TinyAdapter("flow")
    config = resolve_config("tiny-treegrpo", {"eval.steps": 7})
    resolved, training = resolve_for_model(config, adapter)
    assert training.steps == config.sampling.steps == 6
    assert eval_schedule(adapter, resolved).steps == 7
    with pytest.raises(ValueError, match="resolve the config"):
        eval_schedule(adapter, config)
