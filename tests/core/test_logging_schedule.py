"""When a run logs (the final epoch always logs a gallery, trees and a checkpoint), every config
error at once, and the over-optimisation watch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from treegrpo.cli import main
from treegrpo.config import ConfigError, RunConfig, config_errors
from treegrpo.epochs import is_gallery_epoch, is_tree_epoch, logging_schedule
from treegrpo.overopt import gallery_diversity, watch_metrics


def test_the_final_epoch_always_logs() -> None:
    # 8 epochs, every 10: galleries at 0 (baseline) and 8; trees of rollout 0 and 7 (the last).
    assert [e for e in range(9) if is_gallery_epoch(e, epochs=8, every=10)] == [0, 8]
    assert [e for e in range(8) if is_tree_epoch(e, epochs=8, every=10)] == [0, 7]
    # 0 used to mean never: the final epoch still logs.
    assert [e for e in range(9) if is_gallery_epoch(e, epochs=8, every=0)] == [8]
    # Trees of rollouts 0, 2, 5 and 7 are stored as epochs 1, 3, 6 and 8: beside the galleries
    # of every 3 (3 and 6, and the final 8), not one epoch after them (issue 28).
    assert [e for e in range(8) if is_tree_epoch(e, epochs=8, every=3)] == [0, 2, 5, 7]
    galleries = {e for e in range(1, 9) if is_gallery_epoch(e, epochs=8, every=3)}
    trees = {e + 1 for e in range(8) if is_tree_epoch(e, epochs=8, every=3)}
    assert galleries == {3, 6, 8} and galleries < trees and trees - galleries == {1}
    assert [e + 1 for e in range(30) if is_tree_epoch(e, epochs=30, every=10)] == [1, 10, 20, 30]


def test_the_next_gallery_tree_and_checkpoint() -> None:
    def due(done: int, **every: int) -> tuple[int | None, int | None, int | None]:
        out = logging_schedule(epochs=8, epochs_done=done, **every)
        return out["next_gallery_epoch"], out["next_tree_epoch"], out["next_checkpoint_epoch"]

    tens = {"sample_every": 10, "log_tree_every": 10, "checkpoint_every": 10}
    # Trees in their stored numbering: rollout e's trees are epoch e + 1.
    assert due(0, **tens) == (8, 1, 8)
    assert due(1, **tens) == (8, 8, 8)
    threes = {"sample_every": 3, "log_tree_every": 3, "checkpoint_every": 0}
    assert due(0, **threes) == (3, 1, 8)
    assert due(1, **threes) == (3, 3, 8)
    assert due(3, **threes) == (6, 6, 8)
    assert due(7, **threes) == (8, 8, 8)
    assert due(8, **threes) == (None, None, None)


def test_a_short_run_logs_its_trained_model(tmp_path: Path) -> None:
    """An 8-epoch-like short run with every setting at 10: the last gallery is the final epoch,
    its trees are logged, and a checkpoint is there."""
    out = tmp_path / "run"
    settings = ["epochs=3", "sample_every=10", "log_tree_every=10", "checkpoint_every=10"]
    args = ["train", "--preset", "tiny-treegrpo", "--out", str(out), "--quiet"]
    assert main([*args, *(item for s in settings for item in ("--set", s))]) == 0
    galleries = sorted(p.name for p in (out / "artifacts" / "samples").iterdir())
    assert galleries == ["epoch-000000", "epoch-000003"]
    trees = {p.name.split("-tree")[0] for p in (out / "artifacts" / "trees").iterdir()}
    # Trees are stored under the epoch count after their rollout: rollouts 0 and 2.
    assert trees == {"epoch-000001", "epoch-000003"}
    assert (out / "checkpoints" / "epoch-000003").is_dir()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = lines[-1]["metrics"]
    # The over-optimisation watch, at the final gallery epoch.
    assert last["watch/reward_gap"] == pytest.approx(last["reward_mean"] - last["eval/reward_mean"])
    assert 0.0 <= last["watch/diversity"] <= 1.0
    assert "watch/overopt" not in lines[0]["metrics"]  # the baseline gallery: no gap yet
    assert lines[-1]["metrics"]["watch/overopt"] in (0.0, 1.0)


def test_every_config_error_at_once() -> None:
    errors = config_errors("tiny-treegrpo", {"tree.k": 1, "train.lr": -1, "colour": "red"})
    assert sorted(e.field for e in errors) == ["colour", "train.lr", "tree.k"]
    assert config_errors("tiny-treegrpo", {"epochs": 3}) == []
    assert [e.field for e in config_errors("no-such-preset")] == ["preset"]


def test_trackers_are_checked() -> None:
    config = RunConfig.from_dict({"trackers": ["tensorboard", "mlflow", "tensorboard"]})
    assert config.trackers == ("tensorboard", "mlflow")
    assert RunConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"trackers\[0\]"):
        RunConfig.from_dict({"trackers": ["comet"]})
    with pytest.raises(ConfigError, match=r"tracking\.project"):
        RunConfig.from_dict({"tracking": {"project": ""}})


def test_gallery_diversity_literal() -> None:
    # Three 1x1x2 images: a = (0, 0), b = (1, 1), c = (0, 0). RMS distances over 2 pixels:
    # |a-b| = sqrt(2)/sqrt(2) = 1, |a-c| = 0, |b-c| = 1. Mean over the 3 distinct pairs: 2/3.
    images = torch.tensor([[[[0.0, 0.0]]], [[[1.0, 1.0]]], [[[0.0, 0.0]]]])  # (3, 1, 1, 2)
    assert gallery_diversity(images) == pytest.approx(2 / 3)
    assert gallery_diversity(images[:1]) == 0.0


def test_the_watch_flags_a_rising_gap_with_falling_diversity() -> None:
    first, previous = watch_metrics(
        {"reward_mean": 0.6, "eval/reward_mean": 0.5, "watch/diversity": 0.3}, None
    )
    assert first == {"watch/reward_gap": pytest.approx(0.1), "watch/overopt": 0.0}
    assert previous == [pytest.approx(0.1), 0.3]
    calm, previous = watch_metrics(
        {"reward_mean": 0.7, "eval/reward_mean": 0.65, "watch/diversity": 0.2}, previous
    )
    assert calm["watch/overopt"] == 0.0  # the gap (0.05) fell
    hacked, previous = watch_metrics(
        {"reward_mean": 0.9, "eval/reward_mean": 0.6, "watch/diversity": 0.1}, previous
    )
    assert hacked["watch/reward_gap"] == pytest.approx(0.3) and hacked["watch/overopt"] == 1.0
    diverse, previous = watch_metrics(
        {"reward_mean": 1.0, "eval/reward_mean": 0.6, "watch/diversity": 0.4}, previous
    )
    assert diverse["watch/overopt"] == 0.0  # the gap rose, but so did the diversity
    # The baseline gallery (no training reward yet) keeps the previous pair as it is.
    assert watch_metrics({"eval/reward_mean": 0.5, "watch/diversity": 0.2}, previous) == (
        {},
        previous,
    )
