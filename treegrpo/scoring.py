"""Turning latents into rewards and rewards into metrics: the one scorer every caller shares.

Training (each algorithm's rollout), galleries, and the evaluate, playground, sample and branch
jobs all decode latents with the model, score the images with the run's rewards and summarise
the scores the same way:

    reward/<name>_mean        the mean of each named reward (and reward/<name>_std with `spread`)
    reward_mean               sum over rewards of weight * mean

(galleries and evaluation write eval/<name>_mean and eval/reward_mean). A `Scorer` also keeps the
seconds it spent decoding and scoring, which the trainer reports as the epoch's `time/reward`,
and scores in overlapped chunks when the reward is remote (overlap.py).

    scorer = Scorer(adapter.decode, rewards, weights)
    scores = scorer.score(latents, prompts, metadata)   # name -> (n,); metadata: a dict per image
    metrics = summarise(scores, weights, spread=True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from torch import Tensor

from treegrpo.overlap import ScoringQueue
from treegrpo.rewards.registry import Metadata, RewardFn, score_images

Decode = Callable[[Tensor], Tensor]


def weighted_sum(values: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """sum_r w_r value_r over the rewards that have a weight."""
    return sum(weights[name] * value for name, value in values.items() if name in weights)


def summarise_means(
    means: Mapping[str, float],
    weights: Mapping[str, float],
    prefix: str = "",
    stds: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """`<group>/<name>_mean` (and `_std`) per reward, then the weighted `<prefix>reward_mean`;
    the group is "reward" without a prefix ("eval/" gives eval/<name>_mean, eval/reward_mean)."""
    group = prefix or "reward/"
    metrics: dict[str, float] = {}
    for name, mean in means.items():
        metrics[f"{group}{name}_mean"] = mean
        if stds is not None:
            metrics[f"{group}{name}_std"] = stds[name]
    metrics[f"{prefix}reward_mean"] = weighted_sum(means, weights)
    return metrics


def summarise(
    scores: Mapping[str, Tensor],
    weights: Mapping[str, float],
    prefix: str = "",
    spread: bool = False,
) -> dict[str, float]:
    """The metrics of a batch of scores (name -> (n,)): means, population stds with `spread`,
    and their weighted sum (summarise_means)."""
    means = {name: float(values.mean()) for name, values in scores.items()}
    stds = {name: float(values.std(unbiased=False)) for name, values in scores.items()}
    return summarise_means(means, weights, prefix, stds if spread else None)


class Scorer:
    """Decodes latents and scores the images with the run's rewards, timing both.

    `chunks` and `concurrency` say how an epoch's rollout may overlap its scoring with growing
    (overlap.py); one chunk and no threads score serially.
    """

    def __init__(
        self,
        decode: Decode,
        rewards: Mapping[str, RewardFn],
        weights: Mapping[str, float],
        chunks: int = 1,
        concurrency: int = 0,
    ) -> None:
        missing = set(weights) - set(rewards)
        if missing:
            raise ValueError(f"no scoring function for reward(s) {sorted(missing)}")
        self.decode_fn = decode
        self.rewards = dict(rewards)
        self.weights = dict(weights)
        self.chunks = chunks
        self.concurrency = concurrency
        self.seconds = 0.0  # spent decoding, scoring, or waiting for scores

    def decode(self, latents: Tensor) -> Tensor:
        started = time.perf_counter()
        images = self.decode_fn(latents)
        self.seconds += time.perf_counter() - started
        return images

    def score_images(
        self, images: Tensor, prompts: Sequence[str], metadata: Metadata | None = None
    ) -> dict[str, Tensor]:
        started = time.perf_counter()
        scores = score_images(self.rewards, images, list(prompts), metadata)
        self.seconds += time.perf_counter() - started
        return scores

    def score(
        self, latents: Tensor, prompts: Sequence[str], metadata: Metadata | None = None
    ) -> dict[str, Tensor]:
        """Decode and score: name -> (n,)."""
        return self.decode_and_score(latents, prompts, metadata)[1]

    def decode_and_score(
        self, latents: Tensor, prompts: Sequence[str], metadata: Metadata | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        images = self.decode(latents)
        return images, self.score_images(images, prompts, metadata)

    def overlapped(self) -> ScoringRound:
        """A round of chunks scored (on `concurrency` threads) while later chunks grow."""
        return ScoringRound(self)

    def summarise(
        self, scores: Mapping[str, Tensor], prefix: str = "", spread: bool = False
    ) -> dict[str, float]:
        return summarise(scores, self.weights, prefix, spread)


class ScoringRound:
    """Chunks decoded on the caller's thread (the model's device stays on one thread) and scored
    on the scorer's threads; `results()` gives every chunk's scores in submission order, which
    are those of scoring the same chunks serially."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.queue = ScoringQueue(
            lambda images, prompts, metadata: score_images(
                scorer.rewards, images, prompts, metadata
            ),
            scorer.concurrency,
        )

    def submit(
        self, latents: Tensor, prompts: Sequence[str], metadata: Metadata | None = None
    ) -> None:
        self.queue.submit(self.scorer.decode(latents), prompts, metadata)

    def results(self) -> dict[str, Tensor]:
        scores = self.queue.results()
        # The time the rollout spent scoring (serial) or waiting for the threads.
        self.scorer.seconds += self.queue.wait_seconds
        return scores
