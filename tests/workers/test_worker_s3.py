"""The whole life of a digits job with its artifacts in a bucket (a real S3 API: moto's server on
loopback): it trains, its trees and images are readable through the API, its checkpoint
downloads; its worker is SIGKILLed mid-run and a second worker, with an empty local cache,
resumes it from the checkpoint it fetches from the bucket."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from moto_s3 import AWS_ENV, make_bucket, moto_server
from worker_stack import DIGITS_SMALL, Stack, make_stack

from backend import crud
from backend.api import create_app
from backend.db import session_scope
from backend.queue import INTERACTIVE_QUEUE, QUEUE
from backend.s3_store import S3Store
from backend.storage import log_relpath


def test_a_digits_job_lives_in_a_bucket_and_resumes_on_a_worker_with_an_empty_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    epochs = 5
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)  # the API here reads the bucket too
    with moto_server(tmp_path) as endpoint:
        bucket_url = f"s3://{make_bucket(endpoint)}/studio"
        s3 = {"artifact_url": bucket_url, "s3_endpoint_url": endpoint}
        with make_stack("filesystem", tmp_path / "stack", **s3) as stack:
            stack.env.update(AWS_ENV)
            stack.queue = QUEUE  # the API's branch below goes to the interactive lane's queue
            stack.consume = f"{QUEUE},{INTERACTIVE_QUEUE}"
            cache_a, cache_b = tmp_path / "cache-a", tmp_path / "cache-b"
            first = stack.start_worker("a", env={"TREEGRPO_ARTIFACT_DIR": str(cache_a)})
            job_id = stack.submit(
                "train", preset="digits-treegrpo", overrides={**DIGITS_SMALL, "epochs": epochs}
            )
            stack.wait_for(job_id, lambda j: j["progress_step"] >= 2, "two epochs", timeout=180)
            first.kill()  # SIGKILL the worker and the job's process
            killed_at = stack.job(job_id)["progress_step"]
            assert killed_at < epochs

            stack.start_worker("b", env={"TREEGRPO_ARTIFACT_DIR": str(cache_b)})
            job = stack.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=180)
            assert job["status"] == "succeeded" and job["attempt"] == 2, stack.explain(job_id)()

            bucket = S3Store(bucket_url, endpoint)
            # The second worker started from nothing: what it resumed from came from the bucket.
            resumed = [p for p in (cache_b / f"jobs/{job_id}/checkpoints").iterdir()]
            assert resumed and all((p / "COMPLETE").is_file() for p in resumed)
            log = b"".join(bucket.stream(log_relpath(job_id))).decode()
            # One log across both workers: the first attempt's lines, then the resume.
            assert log.index("claimed by a0@") < log.index("claimed by b1@") < log.index("resumed")
            assert f"trainer completed at epoch {epochs}/{epochs}" in log

            with TestClient(create_app(stack.settings)) as client:
                _read_through_the_api(client, job_id, epochs)
                _branch_again_from_a_tree_the_first_worker_logged(client, stack, cache_b, job_id)


def _read_through_the_api(client: TestClient, job_id: int, epochs: int) -> None:
    trees = client.get(f"/api/v1/jobs/{job_id}/trees", params={"limit": 500}).json()
    assert {tree["epoch"] for tree in trees["data"]} == set(range(1, epochs + 1))
    tree = client.get(f"/api/v1/trees/{trees['data'][-1]['id']}").json()
    urls = [node["image_url"] for node in tree["nodes"]]
    assert urls and all(urls)
    image = client.get(urls[-1])
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    samples = client.get(f"/api/v1/jobs/{job_id}/samples").json()
    assert client.get(samples["data"][0]["image_url"]).content.startswith(b"\x89PNG")
    download = client.get(f"/api/v1/jobs/{job_id}/checkpoint")
    assert download.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    state = json.loads(archive.read("state.json"))
    assert state["state"]["epoch"] == epochs and "COMPLETE" not in archive.namelist()
    log = client.get(f"/api/v1/jobs/{job_id}/logs").text
    assert "job succeeded" in log


def _branch_again_from_a_tree_the_first_worker_logged(
    client: TestClient, stack: Stack, cache_b: Path, job_id: int
) -> None:
    """Worker b never had epoch 1's tree in its cache: the node's latent comes from the bucket."""
    with session_scope(stack.url) as session:
        _, key = crud.create_api_key(session, name="tests", role="admin")
    first = client.get(f"/api/v1/jobs/{job_id}/trees", params={"epoch": 1}).json()["data"][0]
    tree = client.get(f"/api/v1/trees/{first['id']}").json()
    root = next(node for node in tree["nodes"] if node["parent_id"] is None)
    latents = cache_b / f"jobs/{job_id}/trees/epoch-000001"
    assert not latents.exists()
    made = client.post(
        f"/api/v1/trees/{first['id']}/nodes/{root['id']}/branch",
        json={"k": 2},
        headers={"X-API-Key": key},
    )
    assert made.status_code == 201, made.text
    branch_id = made.json()["id"]
    done = stack.wait_status(branch_id, ("succeeded", "failed", "cancelled"), timeout=120)
    assert done["status"] == "succeeded", stack.explain(branch_id)()
    assert any(latents.rglob("*.safetensors"))  # fetched into b's cache from the bucket
    regrown = client.get(f"/api/v1/trees/{first['id']}").json()
    assert len(regrown["nodes"]) == len(tree["nodes"])  # the training tree is unchanged
    (branch,) = [b for b in regrown["branches"] if b["job_id"] == branch_id]
    children = branch["nodes"]
    assert children and all(node["image_url"] for node in children)
    assert client.get(children[-1]["image_url"]).content.startswith(b"\x89PNG")
