"""`treegrpo train`: every algorithm runs, resume is exact, bad input is refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from treegrpo.algorithm_names import ALGORITHMS
from treegrpo.cli import main


def _weights(run: Path) -> dict[str, torch.Tensor]:
    latest = sorted((run / "checkpoints").glob("epoch-*"))[-1]
    return load_file(str(latest / "model.safetensors"))


def _metric_epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_trains_two_epochs(tmp_path: Path, algorithm: str) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--preset",
            f"tiny-{algorithm}",
            "--set",
            "epochs=2",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    assert _metric_epochs(out) == [1, 2]
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["metrics"]
    for name in (
        "loss",
        "reward_mean",
        "clip_fraction",
        "approx_kl",
        "ratio_mean",
        "wall_clock",
        "cpu_clock",
    ):
        assert name in last and last[name] == last[name]  # present and not NaN
    assert last["images_seen"] == 2 * 8  # 2 epochs x 2 prompts x (k^d = 4 or G = 4)
    # The update moved the weights away from the random init.
    from treegrpo.models.tiny import TinyAdapter

    initial = TinyAdapter("flow").denoiser.state_dict()
    trained = _weights(out)
    assert any(not torch.equal(initial[name], trained[name]) for name in initial)


@pytest.mark.parametrize("algorithm", ["treegrpo", "dancegrpo"])
def test_resume_is_exact(tmp_path: Path, algorithm: str) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ["--preset", f"tiny-{algorithm}", "--quiet", "--set", "train.kl_beta=0.05"]
    assert main(["train", *common, "--set", "epochs=4", "--out", str(straight)]) == 0
    assert main(["train", *common, "--set", "epochs=2", "--out", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--set", "epochs=4", "--quiet"]) == 0

    a, b = _weights(straight), _weights(split)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert _metric_epochs(split) == [1, 2, 3, 4]
    lines_a = (straight / "metrics.jsonl").read_text().splitlines()
    lines_b = (split / "metrics.jsonl").read_text().splitlines()
    for line_a, line_b in zip(lines_a, lines_b, strict=True):
        metrics_a, metrics_b = json.loads(line_a)["metrics"], json.loads(line_b)["metrics"]
        for name in ("reward_mean", "loss", "images_seen", "window_start"):
            assert metrics_a[name] == metrics_b[name], name


def test_resume_from_an_older_checkpoint_drops_later_metrics(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny-treegrpo",
                "--set",
                "epochs=3",
                "--out",
                str(out),
                "--quiet",
                "--set",
                "checkpoint_every=2",
            ]
        )
        == 0
    )
    # Simulate a crash after epoch 3's metrics but before its checkpoint.
    import shutil

    shutil.rmtree(out / "checkpoints" / "epoch-000003")
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert _metric_epochs(out) == [1, 2, 3]


def test_stop_file_stops_with_a_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "placeholder").write_text("")
    # An existing, non-empty folder is refused rather than overwritten.
    assert main(["train", "--preset", "tiny-treegrpo", "--out", str(out), "--quiet"]) == 2

    from treegrpo.callbacks import Callback
    from treegrpo.config import resolve_config
    from treegrpo.models.registry import load_model
    from treegrpo.rewards.registry import load_rewards
    from treegrpo.trainer import Trainer

    class StopAfterOne(Callback):
        epochs = 0

        def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
            self.epochs = epoch

        def should_stop(self) -> bool:
            return self.epochs >= 1

    config = resolve_config("tiny-treegrpo", assignments=["epochs=5"])
    adapter = load_model(config.model, "cpu")
    trainer = Trainer(
        config, adapter, load_rewards(config.reward_weights), [StopAfterOne()], tmp_path / "ck"
    )
    assert trainer.run() == "stopped"
    assert trainer.state.epoch == 1
    assert (tmp_path / "ck" / "epoch-000001" / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--set", "tree.k=1"], "tree.k: must be >= 2"),
        (
            ["--set", "tree.window=fixed", "--set", "tree.window_start=5"],
            "past the last valid start 3",
        ),
        (["--set", "train.lr=0"], "train.lr: must be > 0"),
        (["--set", "tree.bogus=3"], "unknown setting 'bogus'"),
    ],
)
def test_bad_settings_fail_with_the_field_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    out = tmp_path / "run"
    code = main(["train", "--preset", "tiny-treegrpo", *arguments, "--out", str(out), "--quiet"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_config_file_with_preset(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("preset: tiny-mixgrpo\nepochs: 1\ntree:\n  window: shift\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["algorithm"] == "mixgrpo"
    assert saved["tree"]["window"] == "shift"
    assert saved["epochs"] == 1


def test_resume_refuses_changes_other_than_epochs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny-treegrpo",
                "--set",
                "epochs=1",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["train", "--resume", str(out), "--set", "train.lr=0.1", "--quiet"]) == 2


def test_logged_trees_galleries_and_multi_reward(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = main([
        "train", "--preset", "tiny-treegrpo", "--out", str(out), "--quiet",
        "--set", "epochs=2", "--set", "log_tree_every=2", "--set", "sample_every=1",
        "--set", "reward={brightness: 0.8, contrast: 0.2}", "--set", "tree.backup=logprob_softmax",
    ])  # fmt: skip
    assert code == 0
    # Trees are logged at epoch 1, every 2nd epoch (2, 4, ...) and at the final epoch (2),
    # whatever the setting: one per prompt of the epoch (2 prompts).
    trees = sorted((out / "artifacts" / "trees").glob("epoch-000001-tree-*/tree.json"))
    assert len(trees) == 2
    assert len(list((out / "artifacts" / "trees").glob("epoch-000002-*/tree.json"))) == 2
    doc = json.loads(trees[0].read_text())
    window_start = doc["window_start"]
    from treegrpo.tree import recorded_state_count

    assert len(doc["nodes"]) == recorded_state_count(2, 2, 6, window_start)
    assert doc["reward"] == {"brightness": 0.8, "contrast": 0.2}
    leaf = next(n for n in doc["nodes"] if n["is_leaf"])
    assert leaf["reward"] == pytest.approx(
        0.8 * leaf["rewards"]["brightness"] + 0.2 * leaf["rewards"]["contrast"]
    )
    # Galleries: the epoch-0 baseline and every epoch after, same prompts each time.
    galleries = sorted(p.name for p in (out / "artifacts" / "samples").iterdir())
    assert galleries == ["epoch-000000", "epoch-000001", "epoch-000002"]
    baseline = json.loads((out / "artifacts/samples/epoch-000000/samples.json").read_text())
    # (the preset's held-out prompts, never trained on)
    assert [s["prompt"] for s in baseline["samples"]][:2] == [
        "a light gray square",
        "a small white dot",
    ]
    epochs = _metric_epochs(out)
    assert epochs == [0, 1, 2]
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["metrics"]
    assert set(first) == {
        "eval/brightness_mean",
        "eval/contrast_mean",
        "eval/reward_mean",
        "watch/diversity",
    }
    assert first["eval/reward_mean"] == pytest.approx(
        0.8 * first["eval/brightness_mean"] + 0.2 * first["eval/contrast_mean"]
    )


def test_unsupported_lora_is_refused_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--preset", "tiny-treegrpo", "--set", "train.lora_rank=4",
                 "--out", str(tmp_path / "run"), "--quiet"])  # fmt: skip
    assert code == 2
    assert "train.lora_rank" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
