"""The artifact store in a bucket, against a real S3 API (moto's server on loopback): objects,
multipart uploads, checkpoints that only count once whole, and the API serving artifacts, logs
and checkpoint zips from it, by streaming or by a presigned redirect, with the same 404 for
every key that tries to leave the layout."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import api_testing as at
import httpx
import pytest
from fastapi.testclient import TestClient
from moto_s3 import make_bucket

from backend import storage
from backend.api import create_app
from backend.artifact_store import CHECKPOINT_MARKER, ArtifactStore
from backend.db import session_scope
from backend.models import Job
from backend.s3_store import PART_BYTES, S3Store
from backend.settings import Settings
from workers.mirror import Mirror

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture(autouse=True)
def _credentials(aws_env: None) -> None:
    """Every test here talks to moto with its credentials."""


@pytest.fixture
def bucket_url(endpoint: str) -> str:
    return f"s3://{make_bucket(endpoint)}/studio"


@pytest.fixture
def store(bucket_url: str, endpoint: str) -> S3Store:
    return S3Store(bucket_url, endpoint)


def test_objects_round_trip_and_big_files_go_up_in_parts(store: S3Store, tmp_path: Path) -> None:
    small = tmp_path / "a.json"
    small.write_bytes(b'{"x": 1}')
    big = tmp_path / "model.safetensors"
    big.write_bytes(os.urandom(PART_BYTES + PART_BYTES // 2))  # two parts
    store.put_file("jobs/1/a.json", small)
    store.put_file("jobs/1/ckpt/model.safetensors", big)
    assert store.size("jobs/1/a.json") == 8 and store.size("jobs/1/missing") is None
    assert store.read_range("jobs/1/a.json", 1, 3) == b'"x"'
    assert store.read_range("jobs/1/a.json", 100, 3) == b""
    assert store.keys("jobs/1") == ["jobs/1/a.json", "jobs/1/ckpt/model.safetensors"]
    assert store.keys("jobs/12") == []  # a prefix is a folder, not a string prefix
    assert b"".join(store.stream("jobs/1/ckpt/model.safetensors")) == big.read_bytes()
    copy = tmp_path / "down" / "model.safetensors"
    store.download("jobs/1/ckpt/model.safetensors", copy)
    assert copy.read_bytes() == big.read_bytes()


class FailingStore(S3Store):
    """Dies after `allowed` uploads, as a worker killed mid-upload would."""

    allowed = 1

    def put_file(self, key: str, path: Path) -> None:
        if self.allowed == 0:
            raise ConnectionError("the worker died here")
        self.allowed -= 1
        super().put_file(key, path)


def _checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "state.json").write_text('{"state": {"epoch": 1}}')
    (folder / "model.safetensors").write_bytes(os.urandom(1000))
    return folder


def test_a_checkpoint_whose_upload_died_is_never_complete(
    bucket_url: str, endpoint: str, tmp_path: Path
) -> None:
    dying = FailingStore(bucket_url, endpoint)
    with pytest.raises(ConnectionError):
        dying.put_checkpoint("jobs/1/checkpoints/epoch-000002", _checkpoint(tmp_path / "e2"))
    assert dying.keys("jobs/1/checkpoints")  # a file of it did arrive ...
    assert dying.complete_checkpoints("jobs/1/checkpoints") == []  # ... but it is no checkpoint
    whole = S3Store(bucket_url, endpoint)
    whole.put_checkpoint("jobs/1/checkpoints/epoch-000001", _checkpoint(tmp_path / "e1"))
    assert whole.complete_checkpoints("jobs/1/checkpoints") == ["jobs/1/checkpoints/epoch-000001"]
    # A worker with an empty cache fetches the whole one only.
    cache = tmp_path / "cache"
    Mirror(whole, cache).fetch_checkpoints("jobs/1/checkpoints")
    got = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())
    assert got == [
        f"jobs/1/checkpoints/epoch-000001/{name}"
        for name in (CHECKPOINT_MARKER, "model.safetensors", "state.json")
    ]


def _settings(tmp_path: Path, bucket_url: str, endpoint: str, **more: object) -> Settings:
    url = f"sqlite:///{tmp_path / 'db' / 'treegrpo.db'}"
    from backend import migrate

    migrate.upgrade(url)
    return at.make_settings(
        tmp_path, url, artifact_url=bucket_url, s3_endpoint_url=endpoint, **more
    )


def _put(store: ArtifactStore, key: str, data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    store.put_file(key, path)


def test_the_api_streams_artifacts_from_the_bucket_and_refuses_every_escape(
    bucket_url: str, endpoint: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, bucket_url, endpoint)
    store = S3Store(bucket_url, endpoint)
    key = "jobs/1/trees/epoch-000001/tree-00/images/node-00000.png"
    _put(store, key, PNG, tmp_path)
    _put(store, "jobs/1/page.html", b"<script>alert(1)</script>", tmp_path)
    with TestClient(create_app(settings)) as client:
        answer = client.get(f"/api/v1/artifacts/{key}")
        assert answer.status_code == 200 and answer.content == PNG
        assert answer.headers["content-type"] == "image/png"
        assert answer.headers["x-content-type-options"] == "nosniff"
        html = client.get("/api/v1/artifacts/jobs/1/page.html")
        assert html.status_code == 200 and html.headers["content-type"].startswith(
            "application/octet-stream"
        )
        assert html.headers["content-disposition"].startswith("attachment")
        for escape in (
            "jobs/1/trees/../../../studio/jobs/1/page.html",
            "jobs/1/%2e%2e/1/page.html",
            "jobs/1/%252e%252e/1/page.html",
            "%2Fstudio/jobs/1/page.html",
            "jobs/1/..%5c1/page.html",
            "jobs/1/page.html%00.png",
            "jobs//1/page.html",
            "jobs/%2e/1/page.html",  # a literal "." segment (a client would normalise "./")
            "jobs/1",  # a folder
            "jobs/1/missing.png",
        ):
            refused = client.get(f"/api/v1/artifacts/{escape}")
            assert refused.status_code == 404, escape
            assert refused.headers["content-type"] == "application/problem+json", escape


def test_redirect_mode_answers_with_a_presigned_url_that_works(
    bucket_url: str, endpoint: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, bucket_url, endpoint, artifact_redirect=True)
    key = "jobs/3/samples/epoch-000000/000.png"
    _put(S3Store(bucket_url, endpoint), key, PNG, tmp_path)
    with TestClient(create_app(settings)) as client:
        answer = client.get(f"/api/v1/artifacts/{key}", follow_redirects=False)
        assert answer.status_code == 307 and answer.headers["cache-control"] == "no-store"
        location = answer.headers["location"]
        assert location.startswith(endpoint) and "X-Amz-Signature=" in location
        assert "X-Amz-Expires=300" in location
        assert httpx.get(location).content == PNG  # no credentials needed
        assert client.get("/api/v1/artifacts/jobs/3/nope.png").status_code == 404
        assert client.get("/api/v1/artifacts/jobs/3/%2e%2e/x").status_code == 404


def test_logs_and_checkpoint_zip_come_from_the_bucket(
    bucket_url: str, endpoint: str, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, bucket_url, endpoint)
    url = settings.resolved_database_url
    job = at.new_job(url)
    store = S3Store(bucket_url, endpoint)
    _put(store, storage.log_relpath(job.id), b"line one\nline two\n", tmp_path)
    relpath = f"{storage.checkpoints_relpath(job.id)}/epoch-000001"
    folder = _checkpoint(tmp_path / "ckpt")
    store.put_checkpoint(relpath, folder)
    with session_scope(url) as session:
        row = session.get(Job, job.id)
        assert row is not None
        row.checkpoint_path = relpath
        session.commit()
    with TestClient(create_app(settings)) as client:
        log = client.get(f"/api/v1/jobs/{job.id}/logs", params={"offset": 5})
        assert log.text == "one\nline two\n" and log.headers["x-next-offset"] == "18"
        assert client.get(f"/api/v1/jobs/{job.id}/logs", params={"offset": 99}).text == ""
        download = client.get(f"/api/v1/jobs/{job.id}/checkpoint")
        assert download.status_code == 200, download.text
        archive = zipfile.ZipFile(io.BytesIO(download.content))
        assert sorted(archive.namelist()) == ["model.safetensors", "state.json"]
        assert archive.read("model.safetensors") == (folder / "model.safetensors").read_bytes()
        other = at.new_job(url)
        assert client.get(f"/api/v1/jobs/{other.id}/checkpoint").status_code == 404
        # No lora/ in this checkpoint (a full fine-tune): no LoRA export.
        assert client.get(f"/api/v1/jobs/{job.id}/export").status_code == 404
    lora = folder / "lora"
    lora.mkdir()
    (lora / "pytorch_lora_weights.safetensors").write_bytes(b"diffusers names")
    (lora / "README.md").write_text("# card")
    store.put_checkpoint(relpath, folder)
    with TestClient(create_app(settings)) as client:
        export = client.get(f"/api/v1/jobs/{job.id}/export", params={"format": "lora"})
        assert export.status_code == 200, export.text
        assert "epoch-000001-lora.zip" in export.headers["content-disposition"]
        archive = zipfile.ZipFile(io.BytesIO(export.content))
        assert sorted(archive.namelist()) == ["README.md", "pytorch_lora_weights.safetensors"]
