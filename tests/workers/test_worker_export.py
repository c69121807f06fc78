"""A LoRA train job's checkpoint carries its diffusers export: the API serves it as a zip, and
`treegrpo export JOB_ID` finds the job's checkpoint through the studio's entry point."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors import safe_open
from test_worker_kinds import context
from worker_db import claim, local_settings, new_job, row

from backend.api.app import create_app
from backend.settings import Settings
from treegrpo import cli
from workers.export_source import job_checkpoints
from workers.kinds import run_job

LORA_JOB = {
    "model": "digits",
    "train.lora_rank": 2,
    "epochs": 1,
    "sampling.steps": 4,
    "sample_every": 1,
    "log_tree_every": 0,
}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with local_settings(tmp_path, monkeypatch) as made:
        yield made
    torch.set_num_threads(threads)


def test_a_lora_jobs_export_is_served_and_exported_by_job_id(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = new_job(overrides=LORA_JOB)
    claim(job)
    assert run_job(context(settings, job)) == "completed"
    checkpoint = settings.resolved_artifact_dir / row(job)["checkpoint_path"]
    assert (checkpoint / "lora" / "pytorch_lora_weights.safetensors").is_file()

    with TestClient(create_app(settings)) as client:
        answer = client.get(f"/api/v1/jobs/{job}/export", params={"format": "lora"})
    assert answer.status_code == 200, answer.text
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert sorted(archive.namelist()) == ["README.md", "pytorch_lora_weights.safetensors"]
        card = archive.read("README.md").decode()
    assert "Base model: `digits`" in card and "Final held-out reward: eval/" in card

    assert job_checkpoints(job, settings=settings) == checkpoint.parent
    with pytest.raises(LookupError, match=f"job {job + 1} has no checkpoint"):
        job_checkpoints(job + 1, settings=settings)

    # `treegrpo export JOB_ID`, with the studio's entry point as installed from pyproject.toml.
    entry = EntryPoint("job", "workers.export_source:job_checkpoints", cli.JOB_SOURCES)
    monkeypatch.setattr(
        cli, "entry_points", lambda group: [entry] if group == cli.JOB_SOURCES else []
    )
    out = tmp_path / "job-lora"
    assert cli.main(["export", str(job), "--format", "lora", "--out", str(out)]) == 0
    with safe_open(str(out / "pytorch_lora_weights.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    assert keys and all(k.startswith("transformer.") for k in keys)
    assert cli.main(["export", str(job + 1), "--out", str(tmp_path / "none")]) == 2
