"""Scoring overlapped with tree expansion gives exactly what serial scoring gives.

A stand-in remote reward (brightness behind a short sleep, marked `remote` as the HTTP client
is) makes the trainer grow trees in chunks and score them on threads; the same run with
`reward_concurrency = 0` scores the same chunks on the caller's thread. Both must give the same
rewards, advantages and metrics, and the same weights after 2 epochs. Chunking itself changes
only the batch the model sees: against the one-chunk rollout the numbers agree to float error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor

from treegrpo.config import resolve_config
from treegrpo.models.registry import load_model
from treegrpo.overlap import ScoringQueue, chunk_ranges
from treegrpo.rewards.pixels import brightness
from treegrpo.trainer import Trainer


def _run(concurrency: int, chunks: int) -> tuple[list[dict[str, float]], list[Tensor], dict, set]:
    threads: set[str] = set()

    def slow_remote(images: Tensor, prompts: Sequence[str], metadata: object = None) -> Tensor:
        threads.add(threading.current_thread().name)
        time.sleep(0.01)
        return brightness(images, prompts)

    slow_remote.remote = True  # type: ignore[attr-defined]
    torch.manual_seed(0)
    config = resolve_config(
        "tiny-treegrpo", overrides={"prompts_per_epoch": 6, "device": "cpu", "epochs": 2}
    )
    trainer = Trainer(config, load_model(config.model, "cpu"), {"brightness": slow_remote})
    assert trainer.reward_chunks == 4 and trainer.reward_concurrency == 2  # remote: overlap on
    trainer.reward_chunks, trainer.reward_concurrency = chunks, concurrency
    advantages: list[Tensor] = []
    update = trainer.update

    def recording_update(edges, cond, generator, *rest):  # type: ignore[no-untyped-def]
        advantages.append(edges.advantages.clone())
        return update(edges, cond, generator, *rest)

    trainer.update = recording_update  # type: ignore[method-assign]
    metrics = []
    for epoch in range(2):
        epoch_metrics = trainer.train_epoch(epoch)
        assert epoch_metrics is not None
        metrics.append(
            {
                k: v
                for k, v in epoch_metrics.items()
                if not k.startswith(("time/", "throughput", "wall", "cpu_clock"))
            }
        )
    return metrics, advantages, trainer.adapter.denoiser.state_dict(), threads


def test_overlapped_scoring_equals_serial_scoring() -> None:
    serial = _run(concurrency=0, chunks=4)
    overlapped = _run(concurrency=2, chunks=4)
    assert serial[0] == overlapped[0]  # rewards, advantage stats, losses: every metric
    for a, b in zip(serial[1], overlapped[1], strict=True):
        assert torch.equal(a, b)
    for name, weight in serial[2].items():
        assert torch.equal(weight, overlapped[2][name]), name
    assert serial[3] == {"MainThread"}
    assert "MainThread" not in overlapped[3]  # scored on the pool's threads


def test_chunking_changes_only_float_rounding() -> None:
    one = _run(concurrency=0, chunks=1)
    four = _run(concurrency=0, chunks=4)
    for a, b in zip(one[1], four[1], strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    for key, value in one[0][0].items():
        assert four[0][0][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_chunk_ranges_and_queue_order() -> None:
    assert chunk_ranges(6, 4) == [range(0, 2), range(2, 3), range(3, 4), range(4, 6)]
    assert chunk_ranges(2, 4) == [range(0, 1), range(1, 2)]
    assert chunk_ranges(5, 1) == [range(0, 5)]

    def score(images: Tensor, prompts: Sequence[str], metadata: object = None) -> dict[str, Tensor]:
        time.sleep(0.05 if prompts[0] == "first" else 0.0)  # the first chunk finishes last
        return {"r": images.flatten()}

    queue = ScoringQueue(score, concurrency=3)
    queue.submit(torch.tensor([1.0, 2.0]), ["first", "first"])
    queue.submit(torch.tensor([3.0]), ["second"])
    assert queue.results()["r"].tolist() == [1.0, 2.0, 3.0]

    def failing(
        images: Tensor, prompts: Sequence[str], metadata: object = None
    ) -> dict[str, Tensor]:
        raise RuntimeError("server said no")

    queue = ScoringQueue(failing, concurrency=2)
    queue.submit(torch.zeros(1), ["x"])
    with pytest.raises(RuntimeError, match="server said no"):
        queue.results()


def test_reward_workers_turn_overlap_on_for_local_rewards() -> None:
    def trainer(**settings: int) -> Trainer:
        config = resolve_config("tiny-treegrpo", overrides={"device": "cpu", **settings})
        return Trainer(config, load_model(config.model, "cpu"), {"brightness": brightness})

    plain = trainer()
    assert (plain.reward_chunks, plain.reward_concurrency) == (1, 0)  # local: as before
    threaded = trainer(reward_workers=3)
    assert (threaded.reward_chunks, threaded.reward_concurrency) == (4, 3)
