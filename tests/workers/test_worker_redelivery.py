"""Redelivery on a real Redis broker: two worker processes, the one running a job is SIGKILLed,
and the job's unacknowledged message comes back through Redis's visibility timeout (short here)
to the other worker, which resumes the job from its checkpoint exactly once. And Redis down,
then up: submit answers 503 while it is down, nothing is lost, the job runs once it is back.

Both use a Redis of their own: the first a database number no other test uses (kombu restores
every expired message of a database, whoever sent it, and the timeout here is short), the second
a private redis-server on a free port that the test stops and starts again.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from worker_stack import TINY, make_stack, wait_until

from backend import crud
from backend.api import create_app
from backend.api.submission import ENQUEUE_FAILED
from backend.db import session_scope
from backend.models import Job
from backend.queue import QUEUE

pytestmark = pytest.mark.integration

# A database number of this module's own (the other worker tests use 12).
REDELIVERY_DB = 14


def test_a_killed_worker_s_message_is_redelivered_and_the_job_resumes_once(
    tmp_path: Path,
) -> None:
    epochs = 24
    with make_stack(
        "redis",
        tmp_path,
        broker_url=f"redis://127.0.0.1:6379/{REDELIVERY_DB}",
        broker_visibility_timeout=5.0,  # Redis hands an unacknowledged message on after 5 s
        lease_seconds=2.0,  # a job whose heartbeat is 2 s old may be taken over
        stale_after_seconds=600.0,  # the reconciler stays out of it: only redelivery can help
    ) as stack:
        first, second = stack.start_worker("a"), stack.start_worker("b")
        job_id = stack.submit("train", preset="tiny-treegrpo", overrides={**TINY, "epochs": epochs})
        running = stack.wait_for(job_id, lambda j: j["progress_step"] >= 2, "two epochs")
        # Hostnames are name + index: a0@redis, b1@redis.
        a_holds = running["worker"].startswith("a0@")
        holder, other = (first, second) if a_holds else (second, first)
        other_host = "b1@" if a_holds else "a0@"

        # Two workers with the same message: the lease keeps the second from running it.
        stack.send(job_id)
        wait_until(
            lambda: f"job {job_id} is held by a live worker" in other.text(),
            20,
            "the copy to wait for the lease",
            stack.explain(job_id),
        )
        assert stack.job(job_id)["attempt"] == 1

        holder.kill()  # SIGKILL its process group: the worker and the job's child process
        at_kill = stack.job(job_id)
        assert at_kill["status"] == "running" and at_kill["progress_step"] < epochs

        job = stack.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=120)
        assert job["status"] == "succeeded", stack.explain(job_id)()
        assert job["attempt"] == 2  # one attempt more, not two
        assert job["worker"].startswith(other_host)  # taken over by the other worker
        log = stack.log(job_id)
        assert "resumed from" in log and "job lost" not in log  # the message, not the reconciler
        assert log.count("claimed by") == 2

        points = stack.metric_points(job_id)
        steps = sorted({step for step, _, _ in points})
        assert steps == list(range(1, epochs + 1))  # no gap
        assert len(points) == len({(step, name) for step, name, _ in points})  # no duplicate
        images = {step: value for step, name, value in points if name == "images_seen"}
        assert [images[s] for s in range(1, epochs + 1)] == [8.0 * s for s in range(1, epochs + 1)]


# ---------------------------------------------------------------------------------------------
# Redis down, then up


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    def __init__(self, port: int, folder: Path) -> None:
        self.port, self.folder = port, folder
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._up, 10, f"redis-server on port {self.port}", lambda: "")

    def _up(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
            return True
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(_free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_down_then_up_nothing_is_lost(tmp_path: Path, private_redis: PrivateRedis) -> None:
    with (
        make_stack(
            "redis", tmp_path / "stack", broker_url=f"redis://127.0.0.1:{private_redis.port}/0"
        ) as stack,
        TestClient(create_app(stack.settings)) as client,
    ):
        with session_scope(stack.url) as session:
            _, key = crud.create_api_key(session, name="tests", role="admin")
        headers = {"X-API-Key": key, "Idempotency-Key": "run-while-redis-is-down"}
        body = {"preset": "tiny-treegrpo", "config": {**TINY, "epochs": 2}}
        stack.queue = QUEUE  # the API sends to the default queue; this Redis is ours alone
        worker = stack.start_worker("w")
        wait_until(lambda: "ready." in worker.text(), 60, "the worker", worker.text)

        private_redis.stop()  # the worker stays up, reconnecting
        refused = client.post("/api/v1/jobs", json=body, headers=headers)
        assert refused.status_code == 503, refused.text
        problem = refused.json()
        assert problem["type"].endswith("broker-unavailable") and refused.headers["Retry-After"]
        job_id = problem["job_id"]
        kept = client.get(f"/api/v1/jobs/{job_id}").json()  # the row is there, not queued
        assert kept["status"] == "failed" and kept["error"].startswith(ENQUEUE_FAILED)
        assert client.get("/api/v1/ready").status_code == 503

        private_redis.start()  # empty: the job was never in it
        wait_until(lambda: client.get("/api/v1/ready").status_code == 200, 30, "ready", lambda: "")
        again = client.post("/api/v1/jobs", json=body, headers=headers)
        assert again.status_code == 200 and again.json()["id"] == job_id
        assert again.json()["status"] == "queued"

        job = stack.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=90)
        assert job["status"] == "succeeded" and job["attempt"] == 1, stack.explain(job_id)()
        with session_scope(stack.url) as session:
            assert session.query(Job).count() == 1  # one job, run once
