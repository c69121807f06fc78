"""Multi-node jobs through real workers on PostgreSQL and Redis: two `treegrpo worker` processes
form a nodes=2 gang (one torchrun agent each, c10d rendezvous on 127.0.0.1) and train; losing the
node-1 worker ends the attempt and the job resumes from its checkpoint exactly once; two 2-node
jobs on three workers both finish (a half-formed gang goes back to the queue after the gang
timeout instead of holding its worker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from moto_s3 import AWS_ENV, make_bucket, moto_server
from worker_stack import FINAL, TINY, Stack, make_stack

from backend import crud
from backend.api import create_app
from backend.db import session_scope
from backend.s3_store import S3Store
from treegrpo.checkpoint import checkpoint_weights

# Real workers, torchrun agents and a training run each: tens of seconds on 2 cores.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Every "machine" is this one: the rendezvous and gloo stay on the loopback interface.
NODE_ENV = {"TREEGRPO_NODE_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
TWO_NODES: dict[str, Any] = {**TINY, "nodes": 2}


def _nodes(stack: Stack, job_id: int, attempt: int | None = None) -> list[dict[str, Any]]:
    with session_scope(stack.url) as session:
        return [
            {
                "rank": node.node_rank,
                "status": node.status,
                "worker": node.worker,
                "host": node.host,
                "heartbeat_at": node.heartbeat_at,
                "attempt": node.attempt,
            }
            for node in crud.list_nodes(session, job_id=job_id, attempt=attempt)
        ]


def test_a_two_node_job_forms_its_gang_and_succeeds(tmp_path: Path) -> None:
    with make_stack("redis", tmp_path) as stack:
        for name in ("a", "b"):
            stack.start_worker(name, env=NODE_ENV)
        overrides = {**TWO_NODES, "epochs": 2, "log_tree_every": 1}
        job_id = stack.submit("train", preset="tiny-treegrpo", overrides=overrides)
        job = stack.wait_status(job_id, FINAL, timeout=240)
        assert job["status"] == "succeeded", stack.explain(job_id)()
        assert job["attempt"] == 1

        nodes = _nodes(stack, job_id)
        assert [(n["rank"], n["status"], n["host"]) for n in nodes] == [
            (0, "done", "127.0.0.1"),
            (1, "done", "127.0.0.1"),
        ]
        assert {n["worker"].split("@")[0] for n in nodes} == {"a0", "b1"}  # one machine each
        assert nodes[0]["worker"] == job["worker"]  # node 0 is the worker that took the job
        # Both ranks' trees are counted (2 prompts x 4 leaves per epoch), one series of points.
        points = stack.metric_points(job_id)
        seen = {step: value for step, name, value in points if name == "images_seen"}
        assert seen == {1: 8.0, 2: 16.0}
        assert job["checkpoint_path"].endswith("epoch-000002")
        assert "gang formed: node 0" in stack.log(job_id)

        # The API shows one job with its machines, their hosts and heartbeats.
        with TestClient(create_app(stack.settings)) as client:
            answer = client.get(f"/api/v1/jobs/{job_id}").json()
        assert [(n["node_rank"], n["host"], n["status"]) for n in answer["nodes"]] == [
            (0, "127.0.0.1", "done"),
            (1, "127.0.0.1", "done"),
        ]
        assert all(n["heartbeat_at"] for n in answer["nodes"])


def test_losing_the_node_1_worker_resumes_the_job_once(tmp_path: Path) -> None:
    epochs = 5
    with make_stack("redis", tmp_path) as stack:
        workers = {name: stack.start_worker(name, env=NODE_ENV) for name in ("a", "b")}
        overrides = {**TWO_NODES, "epochs": epochs}
        job_id = stack.submit("train", preset="tiny-treegrpo", overrides=overrides)
        stack.wait_for(job_id, lambda j: j["progress_step"] >= 2, "two epochs", timeout=240)
        node_1 = _nodes(stack, job_id, attempt=1)[1]
        victim = workers["a" if node_1["worker"].startswith("a0@") else "b"]
        victim.kill()  # SIGKILL: the worker, its torchrun agent and its rank
        stack.start_worker("c", env=NODE_ENV)  # a machine for the next attempt's node 1

        job = stack.wait_status(job_id, FINAL, timeout=300)
        assert job["status"] == "succeeded", stack.explain(job_id)()
        assert job["attempt"] == 2  # one attempt more, not two
        log = stack.log(job_id)
        assert "node 1 (" in log and ("stopped heartbeating" in log or "was lost" in log)
        assert log.count("resumed from") == 1
        second = _nodes(stack, job_id, attempt=2)
        assert [n["status"] for n in second] == ["done", "done"]
        assert victim.name not in {n["worker"].split("@")[0][0] for n in second}
        steps = sorted({step for step, name, _ in stack.metric_points(job_id)})
        assert steps == list(range(1, epochs + 1))  # every epoch once: no gap


def test_a_node_1_worker_shutting_down_hands_the_job_on(tmp_path: Path) -> None:
    """A warm shutdown (SIGTERM) of the node-1 worker: its ranks checkpoint and stop, the stop
    is collective, and node 0 queues the job again for the next gang."""
    epochs = 5
    with make_stack("redis", tmp_path) as stack:
        workers = {name: stack.start_worker(name, env=NODE_ENV) for name in ("a", "b")}
        job_id = stack.submit(
            "train", preset="tiny-treegrpo", overrides={**TWO_NODES, "epochs": epochs}
        )
        stack.wait_for(job_id, lambda j: j["progress_step"] >= 1, "one epoch", timeout=240)
        node_1 = _nodes(stack, job_id, attempt=1)[1]
        leaving = workers["a" if node_1["worker"].startswith("a0@") else "b"]
        leaving.stop(timeout=60)
        stack.start_worker("c", env=NODE_ENV)
        job = stack.wait_status(job_id, FINAL, timeout=300)
        assert job["status"] == "succeeded", stack.explain(job_id)()
        assert job["attempt"] == 2
        assert "another machine of the gang stopped the job" in stack.log(job_id)
        assert [n["status"] for n in _nodes(stack, job_id, attempt=1)] == ["done", "done"]


def test_two_two_node_jobs_on_three_workers_both_finish(tmp_path: Path) -> None:
    with make_stack("redis", tmp_path, gang_timeout_seconds=5.0) as stack:
        jobs = [
            stack.submit("train", preset="tiny-treegrpo", overrides={**TWO_NODES, "epochs": 1})
            for _ in range(2)
        ]
        for name in ("a", "b", "c"):
            stack.start_worker(name, env=NODE_ENV)
        for job_id in jobs:
            job = stack.wait_status(job_id, FINAL, timeout=360)
            assert job["status"] == "succeeded", stack.explain(job_id)()
            assert [n["status"] for n in _nodes(stack, job_id)] == ["done", "done"]
        # Three workers hold at most one gang and one half: the half waited out its gang
        # timeout and went back to the queue (at least once) rather than holding its worker.
        logs = [stack.log(job_id) for job_id in jobs]
        assert any("the gang timeout passed before every node joined" in log for log in logs)


def test_a_cancel_reaches_every_node(tmp_path: Path) -> None:
    with make_stack("redis", tmp_path) as stack:
        for name in ("a", "b"):
            stack.start_worker(name, env=NODE_ENV)
        job_id = stack.submit(
            "train", preset="tiny-treegrpo", overrides={**TWO_NODES, "epochs": 50}
        )
        stack.wait_for(job_id, lambda j: j["progress_step"] >= 1, "one epoch", timeout=240)
        with session_scope(stack.url) as session:
            crud.request_cancel(session, job_id=job_id)
        job = stack.wait_status(job_id, FINAL, timeout=120)
        assert job["status"] == "cancelled", stack.explain(job_id)()
        assert job["error"] is None  # stopped cleanly after a step, not killed at the grace
        assert job["progress_step"] < 50 and job["checkpoint_path"]
        # Both machines' processes stopped: their rows ended, neither failed.
        assert [n["status"] for n in _nodes(stack, job_id)] == ["done", "done"]


def test_a_sharded_two_node_job_on_separate_disks_leaves_whole_checkpoints_in_the_bucket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train.sharding=fsdp across two machines that share only the database, the broker and a
    bucket: each worker has its own disk, and node 0 alone uploads each checkpoint. Every
    checkpoint in the bucket must restore on its own (DCP put replicated pieces on node 1's
    disk, which no one uploaded, until each piece was saved by the lowest rank holding it)."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    with moto_server(tmp_path) as endpoint:
        bucket_url = f"s3://{make_bucket(endpoint)}/studio"
        s3 = {"artifact_url": bucket_url, "s3_endpoint_url": endpoint}
        with make_stack("redis", tmp_path / "stack", **s3) as stack:
            stack.env.update(AWS_ENV)
            for name in ("a", "b"):
                disk = {"TREEGRPO_ARTIFACT_DIR": str(tmp_path / f"disk-{name}")}
                stack.start_worker(name, env={**NODE_ENV, **disk})
            overrides = {**TWO_NODES, "epochs": 2, "train.sharding": "fsdp"}
            job_id = stack.submit("train", preset="tiny-treegrpo", overrides=overrides)
            job = stack.wait_status(job_id, FINAL, timeout=300)
            assert job["status"] == "succeeded", stack.explain(job_id)()
            bucket = S3Store(bucket_url, endpoint)
            prefix = f"jobs/{job_id}/checkpoints"
            keys = bucket.keys(prefix)
            epochs = sorted({key.split("/")[3] for key in keys if "/dcp/" in key})
            assert epochs == ["epoch-000001", "epoch-000002"], keys
            for epoch in epochs:
                folder = tmp_path / "from-bucket" / epoch
                for key in (k for k in keys if k.split("/")[3] == epoch):
                    bucket.download(key, folder / key.split(f"{epoch}/", 1)[1])
                weights = checkpoint_weights(folder)  # the bucket's pieces alone
                assert weights and all(torch.isfinite(w).all() for w in weights.values())
