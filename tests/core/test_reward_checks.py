"""A reward that fails or answers NaN stops the run with a readable error before any advantage.

`score_images` is the one gate every scoring path goes through (trainer epochs and galleries,
one-off trees); `combine_rewards` refuses non-finite rewards as a second line of defence.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch import Tensor

from treegrpo.advantages import combine_rewards
from treegrpo.rewards.registry import RewardError, score_images

IMAGES = torch.rand(3, 1, 4, 4)
PROMPTS = ["a", "b", "c"]


def _constant(values: list[float]):  # type: ignore[no-untyped-def]
    def reward(images: Tensor, prompts: Sequence[str], metadata: object = None) -> Tensor:
        return torch.tensor(values)

    return reward


def test_score_images_returns_float_cpu_scores() -> None:
    scores = score_images({"r": _constant([1.0, 2.0, 3.0])}, IMAGES, PROMPTS)
    assert scores["r"].dtype == torch.float32
    assert scores["r"].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            [1.0, float("nan"), 3.0],
            r"reward 'r' returned 1 non-finite score\(s\).*nan for prompt 'b'",
        ),
        ([float("inf")] * 3, r"returned 3 non-finite score\(s\).*inf for prompt 'a'"),
        ([1.0, 2.0], r"shape \(2,\) for 3 images"),
    ],
)
def test_score_images_refuses_bad_answers(values: list[float], message: str) -> None:
    with pytest.raises(RewardError, match=message):
        score_images({"r": _constant(values)}, IMAGES, PROMPTS)


def test_score_images_names_the_reward_that_raised() -> None:
    def broken(images: Tensor, prompts: Sequence[str], metadata: object = None) -> Tensor:
        raise RuntimeError("server said no")

    with pytest.raises(
        RewardError, match="reward 'judge' failed on 3 images: RuntimeError: server said no"
    ):
        score_images({"judge": broken}, IMAGES, PROMPTS)


def test_combine_rewards_refuses_nan() -> None:
    with pytest.raises(ValueError, match="reward 'r' holds NaN"):
        combine_rewards({"r": torch.tensor([1.0, float("nan")])}, {"r": 1.0}, torch.zeros(2))


def test_a_nan_reward_stops_training_before_the_update(tmp_path: Path) -> None:
    from treegrpo.config import resolve_config
    from treegrpo.models.registry import load_model
    from treegrpo.trainer import Trainer

    calls = {"n": 0}

    def sometimes_nan(images: Tensor, prompts: Sequence[str], metadata: object = None) -> Tensor:
        calls["n"] += 1
        scores = images.mean(dim=(1, 2, 3))
        if calls["n"] == 2:  # the second epoch's leaves
            scores[1] = float("nan")
        return scores

    config = resolve_config("tiny-treegrpo", assignments=["epochs=3"])
    adapter = load_model(config.model, "cpu")
    trainer = Trainer(config, adapter, {"brightness": sometimes_nan}, checkpoint_root=tmp_path)
    before = {n: p.detach().clone() for n, p in adapter.denoiser.named_parameters()}
    after_first: dict[str, Tensor] = {}

    def remember(epoch: int, path: Path) -> None:
        after_first.update({n: p.detach().clone() for n, p in adapter.denoiser.named_parameters()})

    trainer.callbacks.on_checkpoint = remember  # type: ignore[method-assign]
    with pytest.raises(RewardError, match="reward 'brightness' returned 1 non-finite"):
        trainer.run()
    # Epoch 1 trained; epoch 2 stopped at scoring, so no update used the NaN.
    assert trainer.state.epoch == 1
    assert any(not torch.equal(before[n], after_first[n]) for n in before)
    for name, param in adapter.denoiser.named_parameters():
        assert torch.equal(param, after_first[name]), name
