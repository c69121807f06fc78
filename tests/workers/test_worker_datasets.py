"""A train job on a pinned dataset version in the artifact store (workers/kinds.py): its trees'
prompts come from the dataset, a resumed attempt draws the same rows, a version held in a bucket
is fetched into an empty worker cache first, and a stored version whose content no longer
matches the job's hash is a clear job error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from moto_s3 import AWS_ENV, make_bucket, moto_server
from test_worker_kinds import StopAtCheckpoint, context, finish
from worker_db import claim, local_settings, new_job

from backend import crud
from backend.datasets import publish
from backend.db import session_scope
from backend.s3_store import S3Store
from backend.settings import Settings
from treegrpo.datasets import DatasetError
from treegrpo.datasets.importer import import_file
from workers.kinds import run_job
from workers.mirror import Mirror

TRAIN = {"epochs": 2, "sampling.steps": 4, "log_tree_every": 1, "prompts_per_epoch": 2}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    with local_settings(tmp_path, monkeypatch) as made:
        yield made


def _store_version(settings: Settings, tmp_path: Path) -> str:
    source = tmp_path / "squares.jsonl"
    rows = [{"prompt": f"a square number {i}", "shade": i % 3} for i in range(500)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = import_file(source, tmp_path / "version")
    target = settings.resolved_artifact_dir / "datasets" / manifest["sha256"]
    target.parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "version").rename(target)
    return str(manifest["sha256"])


def _tree_prompts(job_id: int) -> list[str]:
    with session_scope() as session:
        return [t["tree"].prompt for t in crud.list_trees(session, job_id=job_id)[0]]


def test_a_job_trains_on_its_pinned_dataset_and_resumes_on_the_same_rows(
    settings: Settings, tmp_path: Path
) -> None:
    sha = _store_version(settings, tmp_path)
    prompts = {"dataset": "squares", "split": "train", "sha256": sha}
    straight = new_job(overrides={**TRAIN, "prompts": prompts})
    claim(straight)
    assert run_job(context(settings, straight)) == "completed"
    drawn = _tree_prompts(straight)
    assert len(drawn) == 4 and all(p.startswith("a square number ") for p in drawn)

    split = new_job(overrides={**TRAIN, "prompts": prompts})
    claim(split)
    marker = settings.resolved_artifact_dir / f"jobs/{split}/checkpoints/epoch-000001/state.json"
    assert run_job(context(settings, split, StopAtCheckpoint(marker))) == "stopped"
    finish(split, "interrupted")
    with session_scope() as session:
        crud.request_resume(session, job_id=split)
    claim(split)
    assert run_job(context(settings, split)) == "completed"
    assert _tree_prompts(split) == drawn  # the resumed epoch drew the rows it would have


def test_a_version_altered_in_the_store_is_refused(settings: Settings, tmp_path: Path) -> None:
    sha = _store_version(settings, tmp_path)
    folder = settings.resolved_artifact_dir / "datasets" / sha
    train = folder / "train.parquet"
    train.write_bytes(train.read_bytes()[:-100] + b"\0" * 100)
    job = new_job(overrides={**TRAIN, "prompts": {"dataset": "squares", "sha256": sha}})
    claim(job)
    with pytest.raises(DatasetError, match="altered"):
        run_job(context(settings, job))
    other = new_job(overrides={**TRAIN, "prompts": {"dataset": "squares", "sha256": "f" * 64}})
    claim(other)
    with pytest.raises(DatasetError, match="no finished dataset version"):
        run_job(context(settings, other))


def test_a_job_reads_its_dataset_from_a_bucket_into_an_empty_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    source = tmp_path / "circles.jsonl"
    rows = [{"prompt": f"a circle of size {i}", "size": i} for i in range(1500)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    version = tmp_path / "version"
    manifest = import_file(source, version)
    sha = manifest["sha256"]
    with (
        moto_server(tmp_path) as endpoint,
        local_settings(
            tmp_path,
            monkeypatch,
            artifact_url=f"s3://{make_bucket(endpoint)}/studio",
            s3_endpoint_url=endpoint,
            artifact_dir=tmp_path / "worker-cache",
        ) as settings,
    ):
        bucket = S3Store(str(settings.artifact_url), endpoint)
        publish(bucket, version, manifest)  # as the API stores an import
        cache = settings.resolved_artifact_dir
        assert not (cache / "datasets").exists()
        job = new_job(overrides={**TRAIN, "prompts": {"dataset": "circles", "sha256": sha}})
        claim(job)
        ctx = context(settings, job)
        ctx.mirror = Mirror(bucket, cache)
        assert run_job(ctx) == "completed"
        drawn = _tree_prompts(job)
        assert len(drawn) == 4 and set(drawn) <= {r["prompt"] for r in rows}
        fetched = cache / "datasets" / sha
        assert sorted(p.name for p in fetched.iterdir()) == ["manifest.json", "train.parquet"]
        assert (fetched / "train.parquet").read_bytes() == (version / "train.parquet").read_bytes()
