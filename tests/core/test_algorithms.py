"""The algorithms as their authors run them (docs/TREEGRPO.md §7): what each decodes, which steps
it trains, which noise it shares, its KL, and the per-epoch correctness metrics.

An algorithm is tested through its interface: `roll_out(EpochContext)` on the tiny model with a
scorer that remembers what it decoded. No Trainer is built (except for the trainer's own
metrics at the end).
"""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest
import torch
from torch import Tensor

from treegrpo.algorithm_names import ALGORITHMS
from treegrpo.algorithms import get_algorithm, resolve_for_model
from treegrpo.algorithms.base import (
    DECODE_NOISE_TOLERANCE,
    Algorithm,
    EpochContext,
    EpochPlan,
    EpochRollout,
)
from treegrpo.algorithms.dancegrpo import dancegrpo_train_steps
from treegrpo.algorithms.flat import FlatAlgorithm
from treegrpo.config import ConfigError, resolve_config
from treegrpo.losses import kl_to_reference
from treegrpo.models.tiny import TinyAdapter
from treegrpo.prompts import resolve_prompts
from treegrpo.rewards.registry import load_rewards
from treegrpo.rollout import draw_flat_noise, rollout_flat
from treegrpo.schedules import FlowMatchSchedule
from treegrpo.scoring import Scorer
from treegrpo.seeds import noise_generator
from treegrpo.trainer import Trainer
from treegrpo.tree import model_evaluations


class RememberingScorer(Scorer):
    """The run's rewards; it keeps every latent batch it decoded."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.decoded: list[Tensor] = []

    def decode(self, latents: Tensor) -> Tensor:
        self.decoded.append(latents.clone())
        return super().decode(latents)


def tiny_epoch(
    algorithm: str, record_trees: bool = False, **settings: Any
) -> tuple[Algorithm, EpochContext, RememberingScorer]:
    """Epoch 0 of a tiny preset: its first 2 prompts, one tree (group) each."""
    config = resolve_config(preset=f"tiny-{algorithm}", overrides={"epochs": 1, **settings})
    algo, adapter = get_algorithm(config.algorithm), TinyAdapter("flow")
    config, schedule = resolve_for_model(config, adapter)
    prompts = list(resolve_prompts(config.prompts))[:2]
    rng, generator = random.Random(0), torch.Generator().manual_seed(0)
    start = algo.window_start(config, 0, rng)
    plan = EpochPlan(0, prompts, torch.arange(2), start, generator, rng, range(2))
    weights = config.reward_weights
    scorer = RememberingScorer(adapter.decode, load_rewards(weights), weights)
    noise = functools.partial(noise_generator, config.seed, 0)
    cond = adapter.encode_prompts(prompts)
    ctx = EpochContext(config, adapter, schedule, plan, cond, noise, scorer, record_trees)
    return algo, ctx, scorer


def roll_out(algo: Algorithm, ctx: EpochContext) -> EpochRollout:
    with torch.no_grad():  # as the trainer calls it
        return algo.roll_out(ctx)


def tiny_trainer(algorithm: str, **settings: Any) -> Trainer:
    config = resolve_config(preset=f"tiny-{algorithm}", overrides={"epochs": 1, **settings})
    return Trainer(config, TinyAdapter("flow"), load_rewards(config.reward_weights))


@pytest.mark.parametrize("grid", ["model", "dancegrpo"])
@pytest.mark.parametrize("algorithm", ["dancegrpo", "flowgrpo", "mixgrpo"])
def test_flat_baselines_decode_no_residual_sde_noise(algorithm: str, grid: str) -> None:
    # MixGRPO's window at iteration 0 is steps 0..1 of 6: its last steps are ODE, so clean.
    algo, ctx, _ = tiny_epoch(algorithm, **{"sampling.grid": grid})
    assert isinstance(algo, FlatAlgorithm)
    config, plan = ctx.config, ctx.plan
    assert config.sampling.eta is not None
    sde = algo.sde_steps(config, plan.window_start)
    generator = torch.Generator().manual_seed(0)
    noise = draw_flat_noise(2, 4, config.sampling.steps, ctx.adapter.latent_shape, generator)
    cfg, eta = config.sampling.resolved_cfg_scale, config.sampling.eta
    with torch.no_grad():
        rollout = rollout_flat(
            ctx.adapter, ctx.schedule, plan.prompts, ctx.cond, 4, sde, noise, cfg, eta
        )
    decoded = algo.decoded_latents(config, rollout, ctx.schedule, sde)
    assert float((decoded - rollout.last_x0).std()) <= DECODE_NOISE_TOLERANCE
    if grid == "dancegrpo" and algorithm != "mixgrpo":
        # On DanceGRPO's grid the last step runs from sigma 1/6: its state is visibly noisy,
        # which is what decoding it would have scored.
        assert float((rollout.leaves - rollout.last_x0).std()) > 5 * DECODE_NOISE_TOLERANCE


@pytest.mark.parametrize("algorithm", ["dancegrpo", "flowgrpo", "mixgrpo"])
def test_a_flat_epoch_scores_one_image_per_trajectory(algorithm: str) -> None:
    algo, ctx, scorer = tiny_epoch(algorithm)
    rollout = roll_out(algo, ctx)
    (scored,) = scorer.decoded
    assert scored.shape == (2 * 4, *ctx.adapter.latent_shape)
    images, edges, evals = algo.epoch_counts(ctx.config)
    assert (rollout.images, len(rollout.edges), rollout.model_evals) == (images, edges, evals)
    assert rollout.tree_records is None
    assert rollout.metrics["reward_mean"] == rollout.metrics["reward/brightness_mean"]


@pytest.mark.parametrize("grid", ["model", "dancegrpo"])
def test_tree_leaves_are_the_models_clean_estimate(grid: str) -> None:
    # The window ends before the last step, whose ODE step onto sigma 0 is x - sigma v = x0_hat.
    algo, ctx, scorer = tiny_epoch("treegrpo", record_trees=True, **{"sampling.grid": grid})
    rollout = roll_out(algo, ctx)
    (scored,) = scorer.decoded  # (trees * k^d, C, H, W)
    assert rollout.tree_records is not None
    steps = ctx.config.sampling.steps
    estimates = []  # decoded clean estimate at the last step's state, leaf by leaf
    for record in rollout.tree_records:
        estimates += [node.image for node in record.nodes if node.step_index == steps - 1]
    torch.testing.assert_close(
        ctx.adapter.decode(scored), torch.stack(estimates), rtol=0, atol=1e-5
    )


def test_a_tree_epoch_returns_its_records_counts_and_per_depth_advantages() -> None:
    algo, ctx, _ = tiny_epoch("treegrpo", record_trees=True)
    rollout = roll_out(algo, ctx)
    k, depth, steps = ctx.config.tree.k, ctx.config.tree.depth, ctx.config.sampling.steps
    assert rollout.images == 2 * k**depth
    assert rollout.model_evals == 2 * model_evaluations(k, depth, steps, ctx.plan.window_start)
    assert rollout.tree_records is not None
    assert [r.index for r in rollout.tree_records] == [0, 1]
    assert [r.prompt for r in rollout.tree_records] == ctx.plan.prompts
    assert {f"advantage/depth{d}_mean" for d in range(depth + 1)} <= set(rollout.metrics)
    # Without the tree sink the same epoch records nothing and trains the same edges.
    algo, quiet, _ = tiny_epoch("treegrpo")
    again = roll_out(algo, quiet)
    assert again.tree_records is None
    torch.testing.assert_close(again.edges.advantages, rollout.edges.advantages)


def test_dancegrpo_trains_independent_subsets_without_the_last_step() -> None:
    steps, rows = 10, 64
    chosen = dancegrpo_train_steps(rows, steps, 0.6, torch.Generator().manual_seed(0))
    # int(0.6 * (10 - 1)) = 5 distinct steps per trajectory, never step 9.
    assert chosen.shape == (rows, 5)
    assert all(len(set(row.tolist())) == 5 for row in chosen)
    assert int(chosen.max()) <= steps - 2
    assert len({tuple(sorted(row.tolist())) for row in chosen}) > rows // 2  # per trajectory
    assert set(chosen.flatten().tolist()) == set(range(9))


def test_dancegrpo_epoch_trains_per_trajectory_steps() -> None:
    algo, ctx, _ = tiny_epoch("dancegrpo")
    edges = roll_out(algo, ctx).edges
    steps = ctx.config.sampling.steps  # 6: int(0.6 * 5) = 3 per trajectory
    assert len(edges) == 2 * 4 * 3
    assert int(edges.steps.max()) < steps - 1


@pytest.mark.parametrize(
    ("algorithm", "shared"), [("flowgrpo", False), ("dancegrpo", True), ("mixgrpo", True)]
)
def test_initial_noise_independent_for_flowgrpo_shared_for_dancegrpo(
    algorithm: str, shared: bool
) -> None:
    # Every trajectory trains step 0 here, so the step-0 parents are the initial noises.
    algo, ctx, _ = tiny_epoch(algorithm, **{"flat.timestep_fraction": 1.0})
    edges = roll_out(algo, ctx).edges
    first = edges.steps == 0
    starts, prompt = edges.parents[first], edges.prompt_index[first]
    assert len(starts) == 2 * 4
    for group in (0, 1):
        mine = starts[prompt == group].flatten(1)  # (G, D)
        assert torch.equal(mine[:1].expand_as(mine), mine) is shared, algorithm


def test_algorithm_defaults_fill_the_nulls() -> None:
    flow = get_algorithm("flowgrpo").resolve(resolve_config(preset="tiny-flowgrpo"), "flow")
    assert (flow.sampling.sde, flow.sampling.eta) == ("flowgrpo", 0.7)
    assert (flow.flat.same_noise, flow.flat.global_std, flow.flat.timestep_fraction) == (
        False,
        True,
        0.99,
    )
    assert flow.train.kl_beta == 0.01
    dance = get_algorithm("dancegrpo").resolve(resolve_config(preset="tiny-dancegrpo"), "flow")
    assert (dance.sampling.sde, dance.sampling.eta, dance.flat.timestep_fraction) == (
        "dancegrpo",
        0.3,
        0.6,
    )
    ddim = get_algorithm("treegrpo").resolve(resolve_config(preset="tiny-treegrpo"), "epsilon")
    assert ddim.sampling.eta == 1.0  # DDPO's DDIM eta
    explicit = resolve_config(preset="tiny-dancegrpo", overrides={"sampling.sde": "dancegrpo"})
    with pytest.raises(ConfigError, match="flow-matching models only"):
        get_algorithm("dancegrpo").resolve(explicit, "epsilon")


def test_kl_forms_literal() -> None:
    # Flow-GRPO SDE, eta 0.7, sigma 0.5 -> 0.25: sigma_t = 0.7 sqrt(0.5 / 0.5) = 0.7,
    # std = sigma_t sqrt(0.25) = 0.35. Means apart by 0.1 everywhere: squared 0.01.
    #   flowgrpo form: 0.01 / (2 * 0.7^2)  = 0.0102041
    #   exact form:    0.01 / (2 * 0.35^2) = 0.0408163
    schedule = FlowMatchSchedule(
        torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]), torch.tensor([1000.0, 750, 500, 250])
    )
    x = torch.zeros(2, 1, 2, 2)
    mean, std = schedule.gaussian(x, x, 2, 0.7)
    torch.testing.assert_close(std, torch.full((2, 1, 1, 1), 0.35))
    reference = mean + 0.1
    exact = kl_to_reference(mean, reference, std)
    flowgrpo = kl_to_reference(mean, reference, schedule.kl_scale(std, torch.tensor([2, 2])))
    torch.testing.assert_close(exact, torch.full((2,), 0.0408163))
    torch.testing.assert_close(flowgrpo, torch.full((2,), 0.0102041))


def test_every_epoch_reports_the_correctness_metrics() -> None:
    for algorithm in ALGORITHMS:
        trainer = tiny_trainer(algorithm)
        metrics = trainer.train_epoch(0)
        assert metrics is not None
        # On-policy before the first step: rollout and training log-probs agree.
        assert metrics["check/ratio_dev_first_minibatch"] < 1e-4, algorithm
        for name in (
            "check/clip_fraction",
            "check/zero_std_groups",
            "check/adv_clipped",
            "time/rollout",
            "time/reward",
            "time/update",
            "throughput/images_per_s",
        ):
            assert name in metrics and metrics[name] >= 0.0, (algorithm, name)
        assert metrics["time/reward"] > 0.0
        assert 0.0 <= metrics["check/zero_std_groups"] <= 1.0
