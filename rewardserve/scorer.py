"""The served reward: one registered reward, or a weighted set, scored on one device.

`Scorer.score_batch` takes decoded items of possibly different image sizes, scores each size
group in one call, and isolates failures: when a group's call raises (say, digit_judge on a
prompt that names no digit), its items are scored one at a time, so only the offending items get
an error. A weighted set answers the weighted sum of its rewards' raw scores.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from typing import Any

import torch

from rewardserve.codec import Item
from treegrpo.rewards.registry import REWARDS, RewardFn

WARMUP_PROMPT = "a picture of the digit zero"


class Scorer:
    def __init__(
        self,
        weights: Mapping[str, float],
        options: Mapping[str, Mapping[str, Any]],
        device: str,
        delay: float = 0.0,
    ) -> None:
        unknown = sorted(set(weights) - set(REWARDS))
        if unknown:
            raise ValueError(f"unknown reward(s) {unknown}; known: {', '.join(sorted(REWARDS))}")
        if "remote" in weights:
            raise ValueError("a reward server cannot serve 'remote' (it would call itself)")
        self.weights = dict(weights)
        self.options = {name: dict(options.get(name, {})) for name in weights}
        self.device = torch.device(device)
        self.delay = delay  # seconds added to every batch: a stand-in for a slow model (bench)
        self.fns: dict[str, RewardFn] = {}

    def load(self) -> None:
        """Build every reward (loads models) and call each once, so lazily built state (the
        digit judge trains its classifier on first use) is ready before /ready answers 200."""
        fns = {name: REWARDS[name](self.device, self.options[name]) for name in self.weights}
        warm = torch.full((1, 3, 32, 32), 0.5, device=self.device)
        for fn in fns.values():
            # A reward that cannot score this probe warms up on first use instead.
            with contextlib.suppress(Exception):
                fn(warm, [WARMUP_PROMPT], [{}])
        self.fns = fns

    @property
    def ready(self) -> bool:
        return len(self.fns) == len(self.weights)

    def _call(
        self, images: torch.Tensor, prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[float]:
        total = torch.zeros(len(prompts), dtype=torch.float64)
        for name, fn in self.fns.items():
            scores = fn(images.to(self.device), prompts, metadata)
            values = torch.as_tensor(scores).detach().cpu().double()
            if values.shape != (len(prompts),):
                raise ValueError(f"{name} returned shape {tuple(values.shape)}")
            total += self.weights[name] * values
        return [float(v) for v in total]

    def score_batch(self, items: list[Item]) -> list[tuple[float | None, str | None]]:
        if self.delay:
            time.sleep(self.delay)
        results: list[tuple[float | None, str | None]] = [(None, "not scored")] * len(items)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, item in enumerate(items):
            assert item.image is not None
            groups.setdefault(tuple(item.image.shape), []).append(index)
        for members in groups.values():
            images = torch.stack([items[i].image for i in members])  # type: ignore[misc]
            prompts = [items[i].prompt for i in members]
            metadata = [items[i].metadata for i in members]
            try:
                scores = self._call(images, prompts, metadata)
            except Exception:
                # Find the offending items: score each alone.
                for i in members:
                    results[i] = self._one(items[i])
                continue
            for i, score in zip(members, scores, strict=True):
                results[i] = self._checked(score)
        return results

    def _one(self, item: Item) -> tuple[float | None, str | None]:
        assert item.image is not None
        try:
            return self._checked(self._call(item.image[None], [item.prompt], [item.metadata])[0])
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"

    @staticmethod
    def _checked(score: float) -> tuple[float | None, str | None]:
        if not math.isfinite(score):
            return None, f"the reward returned {score}, not a finite number"
        return score, None
