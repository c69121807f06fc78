"""The one scorer (treegrpo/scoring.py): the reward summary every caller writes, and decoding
and scoring with its clock, serial or overlapped."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from treegrpo.scoring import Scorer, summarise, summarise_means, weighted_sum


def test_summary_of_two_weighted_rewards_literal() -> None:
    scores = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([0.0, 0.5])}
    weights = {"a": 0.8, "b": 0.2}
    # a: mean 2, population std 1; b: mean 0.25, std 0.25; weighted 0.8 * 2 + 0.2 * 0.25 = 1.65
    assert summarise(scores, weights, spread=True) == pytest.approx(
        {
            "reward/a_mean": 2.0,
            "reward/a_std": 1.0,
            "reward/b_mean": 0.25,
            "reward/b_std": 0.25,
            "reward_mean": 1.65,
        }
    )
    assert summarise(scores, weights, prefix="eval/") == pytest.approx(
        {"eval/a_mean": 2.0, "eval/b_mean": 0.25, "eval/reward_mean": 1.65}
    )
    assert summarise_means({"a": 2.0}, weights) == {"reward/a_mean": 2.0, "reward_mean": 1.6}


def test_weighted_sum_ignores_a_score_without_weight() -> None:
    assert weighted_sum({"a": 2.0, "extra": 100.0}, {"a": 0.5}) == 1.0


def _halves(images: Tensor, prompts: Sequence[str], metadata: object = None) -> Tensor:
    return images.flatten(1).mean(dim=1)


def test_scorer_decodes_scores_and_times_both() -> None:
    scorer = Scorer(lambda latents: latents * 0.5, {"half": _halves}, {"half": 1.0})
    latents = torch.ones(3, 1, 2, 2)
    images, scores = scorer.decode_and_score(latents, ["p"] * 3)
    torch.testing.assert_close(images, torch.full((3, 1, 2, 2), 0.5))
    torch.testing.assert_close(scores["half"], torch.full((3,), 0.5))
    assert scorer.seconds > 0.0
    with pytest.raises(ValueError, match=r"no scoring function for reward\(s\) \['other'\]"):
        Scorer(lambda x: x, {"half": _halves}, {"half": 1.0, "other": 1.0})


@pytest.mark.parametrize("concurrency", [0, 2])
def test_an_overlapped_round_gives_the_chunks_scores_in_submission_order(
    concurrency: int,
) -> None:
    threads: set[str] = set()

    def index_of_first_pixel(
        images: Tensor, prompts: Sequence[str], metadata: object = None
    ) -> Tensor:
        threads.add(threading.current_thread().name)
        return images.flatten(1)[:, 0]

    scorer = Scorer(lambda x: x, {"i": index_of_first_pixel}, {"i": 1.0}, 3, concurrency)
    round_ = scorer.overlapped()
    for chunk in range(3):
        round_.submit(torch.arange(2 * chunk, 2 * chunk + 2.0).reshape(2, 1, 1, 1), ["p", "q"])
    assert round_.results()["i"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert ("MainThread" in threads) is (concurrency == 0)
