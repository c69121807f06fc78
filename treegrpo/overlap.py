"""Scoring that overlaps rollout: chunks of trees are scored on worker threads while later chunks
are still being grown.

At scale the reward runs in its own process (`treegrpo reward-serve`), and a trainer that waits
for every tree before it sends the first image leaves the policy's device idle for the whole
scoring round trip (verl-omni's asynchronous reward: 420 s -> 360 s a step). Here the epoch's
trees are grown in `chunks`; each chunk's leaves are decoded on the caller's thread (the model's
device stays on one thread) and handed to a pool of `concurrency` threads that call the rewards,
so the HTTP round trips run while the next chunk is expanded. Results come back in chunk order,
so the rewards, and everything computed from them, are those of serial scoring of the same chunks
(`concurrency = 0` scores each chunk at once, on the caller's thread).

    queue = ScoringQueue(score_fn, concurrency=2)
    for part in chunks(trees, 4):
        ... grow part ...; queue.submit(images, prompts)
    rewards = queue.results()   # name -> (all images,) in submission order
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

# (images, prompts, metadata or None) -> name -> (n,)
Score = Callable[[Tensor, Sequence[str], Sequence[Mapping[str, Any]] | None], dict[str, Tensor]]


def chunk_ranges(count: int, chunks: int) -> list[range]:
    """`count` items in at most `chunks` contiguous, nearly equal ranges (none empty)."""
    chunks = max(1, min(chunks, count))
    bounds = [round(i * count / chunks) for i in range(chunks + 1)]
    return [range(a, b) for a, b in itertools.pairwise(bounds) if b > a]


class ScoringQueue:
    def __init__(self, score: Score, concurrency: int) -> None:
        self.score = score
        self.pool = ThreadPoolExecutor(concurrency) if concurrency > 0 else None
        self.pending: list[Future[dict[str, Tensor]] | dict[str, Tensor]] = []
        self.wait_seconds = 0.0  # time the caller spent scoring or waiting for scores

    def submit(
        self,
        images: Tensor,
        prompts: Sequence[str],
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        rows = None if metadata is None else list(metadata)
        if self.pool is None:
            started = time.perf_counter()
            self.pending.append(self.score(images, list(prompts), rows))
            self.wait_seconds += time.perf_counter() - started
        else:
            self.pending.append(self.pool.submit(self.score, images, list(prompts), rows))

    def results(self) -> dict[str, Tensor]:
        """Every chunk's scores, concatenated in submission order; re-raises a chunk's error."""
        started = time.perf_counter()
        try:
            parts = [p.result() if isinstance(p, Future) else p for p in self.pending]
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
            self.wait_seconds += time.perf_counter() - started
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
