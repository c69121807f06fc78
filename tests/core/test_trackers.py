"""The experiment trackers, offline, read back: TensorBoard event files (scalars and the gallery
images), the MLflow file store (parameters, metric history, gallery artifacts), and W&B's
offline run files. A 2-epoch tiny run with all three, through `treegrpo train`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from treegrpo.cli import main

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
pytest.importorskip("wandb")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trackers") / "run"
    settings = [
        "epochs=2",
        "sample_every=1",
        "trackers=[tensorboard, wandb, mlflow]",
        "tracking.project=tests",
    ]
    args = ["train", "--preset", "tiny-treegrpo", "--out", str(out), "--quiet"]
    assert main([*args, *(item for s in settings for item in ("--set", s))]) == 0
    return out


def _metrics(run: Path) -> list[dict[str, float]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["metrics"] for line in lines]


def test_tensorboard_events_read_back(run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    written = _metrics(run)
    reward = events.Scalars("reward_mean")
    assert [point.step for point in reward] == [1, 2]
    assert [point.value for point in reward] == pytest.approx(
        [written[1]["reward_mean"], written[2]["reward_mean"]]
    )
    assert {"loss", "eval/reward_mean", "watch/diversity", "time/rollout"} <= set(tags["scalars"])
    # The gallery at every gallery epoch (0, 1, 2), as PNG-encoded images.
    gallery = events.Images("gallery")
    assert sorted({image.step for image in gallery}) == [0, 1, 2]
    assert gallery[0].encoded_image_string.startswith(b"\x89PNG")


def test_mlflow_file_store_reads_back(run: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("tests")
    assert experiment is not None
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    assert found.data.params["algorithm"] == "treegrpo"
    assert found.data.params["tree.k"] == "2"  # the tiny preset's k
    history = client.get_metric_history(found.info.run_id, "reward_mean")
    assert sorted(point.step for point in history) == [1, 2]
    written = _metrics(run)
    assert {p.step: p.value for p in history}[2] == pytest.approx(written[2]["reward_mean"])
    artifacts = [item.path for item in client.list_artifacts(found.info.run_id, "gallery")]
    assert artifacts == ["gallery/epoch-000000", "gallery/epoch-000001", "gallery/epoch-000002"]


def test_wandb_offline_run_is_written_for_a_later_sync(run: Path) -> None:
    (offline,) = (run / "wandb").glob("offline-run-*")
    (records,) = offline.glob("run-*.wandb")
    assert records.stat().st_size > 1000  # the run's records: config, history, media
    media = list((offline / "files" / "media" / "images").glob("gallery_*.png"))
    assert media  # the gallery images, ready to upload
