"""`make up` as a new user runs it: fresh clone, fresh data folder, one command, Ctrl-C."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
from deploy_helpers import (
    TINY_TRAIN,
    Tracker,
    free_port,
    fresh_clone,
    interrupt,
    layered_venv,
    ready,
    submit_and_wait,
    wait_for,
)

pytestmark = pytest.mark.slow

KEY_LINE = re.compile(r"API key:\s+(\S+)")


def start_make_up(clone: Path, data: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TREEGRPO_", "PYTEST_"))}
    env.update({"TREEGRPO_DATA_DIR": str(data), "TREEGRPO_PORT": str(port), "OMP_NUM_THREADS": "1"})
    with log.open("ab") as out:
        return subprocess.Popen(
            ["make", "up"],
            cwd=clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_make_up_in_a_fresh_clone_runs_a_job_stops_cleanly_and_keeps_its_data(
    tmp_path: Path,
) -> None:
    clone = fresh_clone(tmp_path)
    layered_venv(clone)
    data, log = tmp_path / "data", tmp_path / "up.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    up = start_make_up(clone, data, port, log)
    tracker = Tracker(up)
    try:
        wait_for("the stack to be ready", lambda: ready(url), 240, tracker)
        match = wait_for("the key to be printed", lambda: KEY_LINE.search(log.read_text()), 10)
        key = match.group(1)
        assert f"{url}/ui" in log.read_text()
        job = submit_and_wait(url, key, TINY_TRAIN, 240, tracker)
        assert job["status"] == "succeeded", job
        assert httpx.get(f"{url}/ui/", timeout=10).status_code == 200
        tracker.scan()
        assert len(tracker.seen) >= 4  # make, up, the API, the worker (and its children)
        interrupt(up)
        assert up.returncode is not None
        assert tracker.alive() == [], f"left behind after Ctrl-C: {tracker.alive()}"
    finally:
        tracker.kill_all()
        print(log.read_text()[-3000:])

    # Again, on the same data: the earlier run is still there, and the same key still works.
    again = start_make_up(clone, data, port, log)
    tracker = Tracker(again)
    try:
        wait_for("the stack to be ready again", lambda: ready(url), 240, tracker)
        jobs = httpx.get(f"{url}/api/v1/jobs", timeout=5).json()
        assert [j["id"] for j in jobs["data"]] == [job["id"]]
        assert jobs["data"][0]["status"] == "succeeded"
        response = httpx.post(
            f"{url}/api/v1/jobs/{job['id']}/cancel", headers={"X-API-Key": key}, timeout=5
        )
        assert response.status_code == 409  # authenticated (same key), but the job is finished
        interrupt(again)
        assert tracker.alive() == [], f"left behind after Ctrl-C: {tracker.alive()}"
    finally:
        tracker.kill_all()
