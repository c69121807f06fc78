"""The algorithms as their authors run them (TREEGRPO.md 7): what each decodes, which steps it
trains, which noise it shares, its KL, and the per-epoch correctness metrics."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from treegrpo.algorithms import dancegrpo as dancegrpo_module
from treegrpo.algorithms import flat as flat_module
from treegrpo.algorithms import get_algorithm
from treegrpo.algorithms.base import DECODE_NOISE_TOLERANCE
from treegrpo.algorithms.dancegrpo import dancegrpo_train_steps
from treegrpo.config import ConfigError, resolve_config
from treegrpo.losses import kl_to_reference
from treegrpo.models.tiny import TinyAdapter
from treegrpo.rewards.registry import load_rewards
from treegrpo.rollout import FlatRollout, TreeRollout
from treegrpo.schedules import FlowMatchSchedule
from treegrpo.trainer import Trainer

ALGORITHMS = ["treegrpo", "dancegrpo", "flowgrpo", "mixgrpo"]


def tiny_trainer(algorithm: str, **settings: Any) -> Trainer:
    config = resolve_config(preset=f"tiny-{algorithm}", overrides={"epochs": 1, **settings})
    return Trainer(config, TinyAdapter("flow"), load_rewards(config.reward_weights))


class Spy:
    """Records what an epoch scored and the rollout it came from."""

    def __init__(self, trainer: Trainer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.scored: list[torch.Tensor] = []
        self.rollouts: list[FlatRollout | TreeRollout] = []
        score = trainer.score

        def spy_score(latents: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
            self.scored.append(latents.clone())
            return score(latents, prompts)

        monkeypatch.setattr(trainer, "score", spy_score)
        submit = trainer.submit_scoring  # the tree algorithm scores in (possibly one) chunks

        def spy_submit(queue: Any, latents: torch.Tensor, prompts: list[str]) -> None:
            self.scored.append(latents.clone())
            submit(queue, latents, prompts)

        monkeypatch.setattr(trainer, "submit_scoring", spy_submit)
        for module, name in ((flat_module, "rollout_flat"),):
            original = getattr(module, name)

            def wrapped(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                out = _original(*args, **kwargs)
                self.rollouts.append(out)
                return out

            monkeypatch.setattr(module, name, wrapped)


@pytest.mark.parametrize("grid", ["model", "dancegrpo"])
@pytest.mark.parametrize("algorithm", ["dancegrpo", "flowgrpo", "mixgrpo"])
def test_flat_baselines_decode_no_residual_sde_noise(
    algorithm: str, grid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MixGRPO's window at iteration 0 is steps 0..1 of 6: its last steps are ODE, so clean.
    trainer = tiny_trainer(algorithm, **{"sampling.grid": grid})
    spy = Spy(trainer, monkeypatch)
    trainer.train_epoch(0)
    (scored,), (rollout,) = spy.scored, spy.rollouts
    assert isinstance(rollout, FlatRollout)
    residual = (scored - rollout.last_x0).std()
    assert float(residual) <= DECODE_NOISE_TOLERANCE
    if grid == "dancegrpo" and algorithm != "mixgrpo":
        # On DanceGRPO's grid the last step runs from sigma 1/6: its state is visibly noisy,
        # which is what decoding it would have scored.
        assert float((rollout.leaves - rollout.last_x0).std()) > 5 * DECODE_NOISE_TOLERANCE


@pytest.mark.parametrize("grid", ["model", "dancegrpo"])
def test_tree_leaves_are_the_models_clean_estimate(
    grid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window ends before the last step, whose ODE step onto sigma 0 is x - sigma v = x0_hat.
    trainer = tiny_trainer("treegrpo", **{"sampling.grid": grid, "log_tree_every": 1})
    spy = Spy(trainer, monkeypatch)
    captured: list[TreeRollout] = []
    log_trees = trainer.log_trees
    monkeypatch.setattr(
        trainer, "log_trees", lambda rollout, *a: (captured.append(rollout), log_trees(rollout, *a))
    )
    trainer.train_epoch(0)
    (scored,), (rollout,) = spy.scored, captured
    steps = rollout.shape.steps
    last_estimate = rollout.x0[steps - 1].reshape(scored.shape[0], -1, *scored.shape[1:])
    # (trees, 1 per leaf ...) -> every leaf's clean estimate at the last step
    torch.testing.assert_close(scored, last_estimate.reshape(scored.shape), rtol=0, atol=1e-5)


def test_dancegrpo_trains_independent_subsets_without_the_last_step() -> None:
    steps, rows = 10, 64
    chosen = dancegrpo_train_steps(rows, steps, 0.6, torch.Generator().manual_seed(0))
    # int(0.6 * (10 - 1)) = 5 distinct steps per trajectory, never step 9.
    assert chosen.shape == (rows, 5)
    assert all(len(set(row.tolist())) == 5 for row in chosen)
    assert int(chosen.max()) <= steps - 2
    assert len({tuple(sorted(row.tolist())) for row in chosen}) > rows // 2  # per trajectory
    assert set(chosen.flatten().tolist()) == set(range(9))


def test_dancegrpo_epoch_trains_per_trajectory_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = tiny_trainer("dancegrpo")
    captured: list[Any] = []
    edges_of = dancegrpo_module.FlatAlgorithm.roll_out

    def spy(self: Any, *args: Any) -> Any:
        out = edges_of(self, *args)
        captured.append(out.edges)
        return out

    monkeypatch.setattr(dancegrpo_module.FlatAlgorithm, "roll_out", spy)
    trainer.train_epoch(0)
    edges = captured[0]
    steps = trainer.config.sampling.steps  # 6: int(0.6 * 5) = 3 per trajectory
    assert len(edges) == 2 * 4 * 3
    assert int(edges.steps.max()) < steps - 1


def test_initial_noise_independent_for_flowgrpo_shared_for_dancegrpo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for algorithm, shared in (("flowgrpo", False), ("dancegrpo", True), ("mixgrpo", True)):
        trainer = tiny_trainer(algorithm)
        spy = Spy(trainer, monkeypatch)
        trainer.train_epoch(0)
        starts = spy.rollouts[-1].states[:, 0].reshape(2, 4, -1)  # (prompts, G, D)
        same = torch.equal(starts[:, :1].expand_as(starts), starts)
        assert same is shared, algorithm
        monkeypatch.undo()


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
