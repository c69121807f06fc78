"""Faults, with real workers on both transports: cancel, a killed worker, a failing reward.

These run the random-init test model (`tiny-random`, loaded in a second) so that each test is a
few seconds; the path through worker, child process, trainer and database is the same as for any
model.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from worker_stack import TINY, Stack

from backend import crud
from backend.db import session_scope


@pytest.fixture(autouse=True)
def own_workers(stack: Stack) -> Iterator[None]:
    """Each test starts the workers it needs and stops them after."""
    yield
    stack.stop_workers()


def test_cancel_of_a_running_job_ends_cancelled_with_a_checkpoint(stack: Stack) -> None:
    stack.start_worker("cancel")
    job_id = stack.submit("train", preset="tiny-treegrpo", overrides={**TINY, "epochs": 10_000})
    stack.wait_for(job_id, lambda j: j["progress_step"] >= 1, "the first epoch")
    asked = time.monotonic()
    with session_scope(stack.url) as session:
        assert crud.request_cancel(session, job_id=job_id).status == "cancelling"
    job = stack.wait_status(job_id, ("cancelled", "failed", "succeeded"), timeout=10)
    took = time.monotonic() - asked
    assert job["status"] == "cancelled", stack.explain(job_id)()
    assert took < 10
    assert job["error"] is None  # it stopped by itself, no forced kill
    checkpoint = stack.store / str(job["checkpoint_path"])
    assert (checkpoint / "model.safetensors").is_file()
    epoch = json.loads((checkpoint / "state.json").read_text())["state"]["epoch"]
    assert 1 <= epoch == job["progress_step"] < 10_000
    assert "cancel requested" in stack.log(job_id)


def test_a_killed_worker_is_replaced_and_the_job_resumes_without_gap_or_duplicate(
    stack: Stack,
) -> None:
    epochs = 14
    first = stack.start_worker("doomed")
    job_id = stack.submit(
        "train", preset="tiny-treegrpo", overrides={**TINY, "epochs": epochs, "sample_every": 1}
    )
    stack.wait_for(job_id, lambda j: j["progress_step"] >= 3, "three epochs")
    first.kill()  # SIGKILL the worker's process group: the worker and the job's process
    at_kill = stack.job(job_id)
    assert at_kill["status"] == "running" and at_kill["progress_step"] < epochs
    killed_at = at_kill["progress_step"]

    stack.start_worker("rescue")
    job = stack.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=90)
    assert job["status"] == "succeeded", stack.explain(job_id)()
    assert job["attempt"] == 2
    log = stack.log(job_id)
    assert "job lost" in log and "queued again to resume" in log
    assert "resumed from" in log and f"trainer completed at epoch {epochs}/{epochs}" in log

    points = stack.metric_points(job_id)
    steps = sorted({step for step, _, _ in points})
    assert steps == list(range(epochs + 1))  # no gap
    assert len(points) == len({(step, name) for step, name, _ in points})  # no duplicate
    names = [sorted(name for s, name, _ in points if s == step) for step in range(1, epochs + 1)]
    assert all(n == names[0] for n in names)  # every epoch complete, before and after the kill
    by_step = {step: value for step, name, value in points if name == "images_seen"}
    assert [by_step[s] for s in range(1, epochs + 1)] == [8.0 * s for s in range(1, epochs + 1)]
    assert killed_at <= epochs


def test_a_worker_shutdown_checkpoints_and_the_next_worker_resumes(stack: Stack) -> None:
    epochs = 12
    first = stack.start_worker("leaving")
    job_id = stack.submit("train", preset="tiny-treegrpo", overrides={**TINY, "epochs": epochs})
    stack.wait_for(job_id, lambda j: j["progress_step"] >= 2, "two epochs")
    first.stop(timeout=30)  # SIGTERM to the group, as `treegrpo up` and `docker stop` do
    assert first.process.returncode == 0
    left = stack.job(job_id)
    assert left["status"] == "queued", stack.explain(job_id)()
    assert left["progress_step"] < epochs
    assert "queued again; the next worker resumes it" in stack.log(job_id)

    stack.start_worker("next")
    job = stack.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=60)
    assert job["status"] == "succeeded", stack.explain(job_id)()
    assert job["attempt"] == 2
    steps = sorted({step for step, _, _ in stack.metric_points(job_id)})
    assert steps == list(range(1, epochs + 1))


class _RewardServer:
    """A loopback reward server: good scores for the first `good` requests, then `failure`."""

    def __init__(self, good: int, failure: str) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests += 1
                count = len(body["prompts"])
                if outer.requests <= good:
                    self._answer(200, {"scores": [0.5 + 0.01 * i for i in range(count)]})
                elif failure == "http500":
                    self._answer(500, {"detail": "reward model crashed"})
                else:
                    self._answer(200, {"scores": [float("nan")] * count})

            def _answer(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()  # NaN is written as the literal NaN
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/score"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def reward_server(request: pytest.FixtureRequest) -> Iterator[_RewardServer]:
    # One request scores a gallery or a chunk of an epoch's trees (batch_size 64; a remote
    # reward scores the epoch's 2 trees in 2 chunks, overlapped with the rollout): the baseline
    # gallery, then epoch 1's two chunks and its gallery succeed; epoch 2's first chunk fails.
    server = _RewardServer(good=4, failure=request.param)
    yield server
    server.close()


@pytest.mark.parametrize(
    ("reward_server", "message"),
    [
        # The server's answer is blanked: a config could point the reward at any service the
        # worker reaches and read its answer back in the error (workers/failures.py).
        ("http500", "answered HTTP 500 after 1 attempts: {'…': '…'}"),
        ("nan", "returned scores[0] = nan, not a finite number"),
    ],
    indirect=["reward_server"],
    ids=["http500", "nan"],
)
def test_a_failing_reward_fails_the_job_and_keeps_earlier_metrics(
    stack: Stack, reward_server: _RewardServer, message: str
) -> None:
    stack.start_worker("reward")
    options = {"url": reward_server.url, "retries": 0, "batch_size": 64, "timeout": 10}
    overrides = {
        **TINY,
        "epochs": 3,
        "sample_every": 1,
        "reward": "remote",
        "reward_options": {"remote": options},
    }
    job_id = stack.submit("train", preset="tiny-treegrpo", overrides=overrides)
    job = stack.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=60)
    assert job["status"] == "failed", stack.explain(job_id)()
    error = str(job["error"])
    assert error.startswith("RewardError: reward 'remote' failed on 4 images: RuntimeError: ")
    assert message in error and reward_server.url in error
    assert error.endswith("(during epoch 2 of 3; the last checkpoint is epoch 1)")
    # Epoch 0 (baseline) and epoch 1 stay; nothing of the failed epoch was written.
    points = stack.metric_points(job_id)
    assert sorted({step for step, _, _ in points}) == [0, 1]
    assert "reward_mean" in {name for step, name, _ in points if step == 1}
    assert job["checkpoint_path"] and job["checkpoint_path"].endswith("epoch-000001")
    # The traceback is the worker's own business: the job's log (which the API serves) has none.
    assert "Traceback" not in stack.log(job_id)
    assert "Traceback" in "".join(worker.text() for worker in stack.workers)


def test_a_model_folder_with_a_foreign_index_fails_with_one_line_that_echoes_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    """A config can point the worker at any JSON file it can read (until file roots refuse it
    at submit); the job's error names the rule but never quotes what the file holds."""
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "HushHushPipeline"}')
    stack.start_worker("foreign")
    job_id = stack.submit("train", preset="tiny-treegrpo", overrides={**TINY, "model": str(folder)})
    job = stack.wait_status(job_id, ("succeeded", "failed"), timeout=60)
    assert job["status"] == "failed", stack.explain(job_id)()
    error = str(job["error"])
    assert "_class_name" in error and "model_index.json" in error  # the rule
    assert str(folder) in error  # the job's own value may be quoted back
    assert "HushHush" not in error and "\n" not in error
    log = stack.log(job_id)
    assert "HushHush" not in log and "Traceback" not in log
    assert "HushHushPipeline" in "".join(worker.text() for worker in stack.workers)
