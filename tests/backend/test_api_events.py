"""GET /jobs/{id}/events: replay on connect (from since_step), live news as a worker writes,
`end` once the job stops, keep-alive comments, and a bounded stream lifetime."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import api_testing as at
import httpx
from fastapi.testclient import TestClient

from backend.api import create_app
from backend.client import parse_sse
from backend.settings import Settings


def _events(text: str) -> list[tuple[str, Any]]:
    return list(parse_sse(iter(text.splitlines())))


def test_a_finished_job_replays_everything_then_ends(
    client: TestClient, settings: Settings
) -> None:
    url = settings.resolved_database_url
    job = at.new_job(url)
    attempt = at.run_job(url, job.id)
    at.add_metrics(url, job.id, range(3), attempt=attempt)
    tree_id = at.add_tree(url, job.id, epoch=1)
    at.add_samples(url, job.id, 0, ["a"])
    at.add_samples(url, job.id, 2, ["b"])
    at.finish(url, job.id, attempt, "succeeded")

    answer = client.get(f"/api/v1/jobs/{job.id}/events")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["cache-control"] == "no-cache"
    events = _events(answer.text)
    names = [name for name, _ in events]
    assert names == ["status", "metrics", "tree", "samples", "samples", "end"]
    assert events[0][1]["status"] == "succeeded"
    points = events[1][1]["points"]
    assert sorted((p["step"], p["name"]) for p in points) == [
        (step, name) for step in range(3) for name in ("loss", "reward_mean")
    ]
    assert [p["step"] for p in points] == sorted(p["step"] for p in points)  # in write order
    assert events[2][1]["id"] == tree_id and events[2][1]["leaves"] == 2
    assert [data["epoch"] for name, data in events if name == "samples"] == [0, 2]
    end = events[-1][1]
    assert end["id"] == job.id and end["status"] == "succeeded"
    assert end["latest_reward"] == 0.2


def test_since_step_replays_only_what_came_after(client: TestClient, settings: Settings) -> None:
    url = settings.resolved_database_url
    job = at.new_job(url)
    attempt = at.run_job(url, job.id)
    at.add_metrics(url, job.id, range(5), attempt=attempt)
    at.add_tree(url, job.id, epoch=1)
    at.add_tree(url, job.id, epoch=4)
    at.add_samples(url, job.id, 2, ["a"])
    at.add_samples(url, job.id, 4, ["b"])
    at.finish(url, job.id, attempt, "failed", error="boom")

    events = _events(client.get(f"/api/v1/jobs/{job.id}/events?since_step=2").text)
    metrics = [p for name, data in events if name == "metrics" for p in data["points"]]
    assert sorted({p["step"] for p in metrics}) == [3, 4]
    assert [data["epoch"] for name, data in events if name == "tree"] == [4]
    assert [data["epoch"] for name, data in events if name == "samples"] == [4]
    assert events[-1][0] == "end" and events[-1][1]["error"] == "boom"


def test_live_news_arrive_in_order_until_the_end(
    app: Any, settings: Settings, auth: dict[str, str]
) -> None:
    url = settings.resolved_database_url
    job = at.new_job(url)
    received: list[tuple[str, Any]] = []
    connected = threading.Event()

    def worker() -> None:
        assert connected.wait(timeout=20)  # the stream has sent its first event
        attempt = at.run_job(url, job.id)
        time.sleep(0.1)
        at.add_metrics(url, job.id, range(2), attempt=attempt)
        time.sleep(0.1)
        at.add_tree(url, job.id, epoch=1)
        at.add_samples(url, job.id, 1, ["x"])
        time.sleep(0.1)
        at.add_metrics(url, job.id, range(2, 3), attempt=attempt)
        at.finish(url, job.id, attempt, "succeeded")

    with at.live_server(app) as server:
        thread = threading.Thread(target=worker)
        thread.start()
        with (
            httpx.Client(base_url=server.url, timeout=20) as http,
            http.stream("GET", f"/api/v1/jobs/{job.id}/events") as stream,
        ):
            for event in parse_sse(stream.iter_lines()):
                received.append(event)
                connected.set()
        thread.join()

    names = [name for name, _ in received]
    assert names[0] == "status" and received[0][1]["status"] == "queued"
    assert names[-1] == "end" and received[-1][1]["status"] == "succeeded"
    statuses = [data["status"] for name, data in received if name == "status"]
    assert statuses[:2] == ["queued", "running"]
    steps = [p["step"] for name, data in received if name == "metrics" for p in data["points"]]
    assert sorted(set(steps)) == [0, 1, 2]  # every point once, none lost
    assert len(steps) == 6
    assert names.index("tree") < names.index("end")
    assert [data["epoch"] for name, data in received if name == "samples"] == [1]


def test_keep_alives_fill_silence_and_streams_end_in_time(tmp_path: Path, sqlite_url: str) -> None:
    settings = at.make_settings(
        tmp_path, sqlite_url, sse_keepalive_seconds=0.1, sse_max_seconds=0.6
    )
    job = at.new_job(sqlite_url)
    at.run_job(sqlite_url, job.id)  # running, and nothing more happens
    started = time.monotonic()
    with TestClient(create_app(settings)) as client:
        text = client.get(f"/api/v1/jobs/{job.id}/events").text
    assert time.monotonic() - started < 5
    assert ": keep-alive" in text
    names = [name for name, _ in _events(text)]
    assert names == ["status"]  # no `end`: the client reconnects with since_step
