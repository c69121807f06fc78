"""When the database or the broker is down: /ready names the failing part, routes answer 503
problem+json (never a stack trace), and a job whose message could not be sent is not lost."""

from __future__ import annotations

import time
from pathlib import Path

import api_testing as at
import pytest
from fastapi.testclient import TestClient

from backend import crud
from backend.api import create_app
from backend.db import session_scope
from backend.models import Job

DEAD_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:1/x"
DEAD_BROKER = "redis://127.0.0.1:1/0"

DB_ROUTES = [
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/1"),
    ("GET", "/api/v1/jobs/1/metrics"),
    ("GET", "/api/v1/jobs/1/events"),
    ("GET", "/api/v1/jobs/1/logs"),
    ("GET", "/api/v1/jobs/1/trees"),
    ("GET", "/api/v1/jobs/1/samples"),
    ("GET", "/api/v1/jobs/1/checkpoint"),
    ("GET", "/api/v1/trees/1"),
    ("POST", "/api/v1/jobs"),
    ("POST", "/api/v1/jobs/1/cancel"),
    ("POST", "/api/v1/jobs/1/resume"),
    ("POST", "/api/v1/trees/1/nodes/1/branch"),
]


@pytest.fixture
def dead_db_client(tmp_path: Path) -> TestClient:
    return TestClient(create_app(at.make_settings(tmp_path, DEAD_DATABASE)))


def test_ready_names_the_database(dead_db_client: TestClient) -> None:
    ready = dead_db_client.get("/api/v1/ready")
    assert ready.status_code == 503
    assert ready.headers["content-type"] == "application/problem+json"
    body = ready.json()
    assert body["database"].startswith("unavailable")
    assert body["broker"] == "ok"
    assert "database" in body["detail"] and "database" in body["title"]
    assert dead_db_client.get("/api/v1/health").json() == {"status": "ok"}


@pytest.mark.parametrize(("method", "path"), DB_ROUTES)
def test_routes_answer_503_problems(dead_db_client: TestClient, method: str, path: str) -> None:
    started = time.monotonic()
    answer = dead_db_client.request(
        method, path, json={"preset": "tiny-treegrpo"}, headers={"X-API-Key": "tgk_any"}
    )
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == "5"
    assert "Traceback" not in answer.text and "psycopg" not in answer.text
    assert answer.json()["status"] == 503
    assert time.monotonic() - started < 10


def test_routes_without_the_database_still_work(dead_db_client: TestClient) -> None:
    assert dead_db_client.get("/api/v1/models").status_code == 200
    assert dead_db_client.get("/api/v1/presets").status_code == 200
    assert dead_db_client.get("/api/v1/artifacts/nothing.png").status_code == 404


def test_an_unmigrated_database_is_not_ready(tmp_path: Path) -> None:
    settings = at.make_settings(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}")
    with TestClient(create_app(settings)) as client:
        ready = client.get("/api/v1/ready")
        assert ready.status_code == 503
        assert ready.json()["database"].startswith("not migrated")
        assert "treegrpo migrate" in ready.json()["database"]


def test_ready_names_the_broker(tmp_path: Path, sqlite_url: str) -> None:
    settings = at.make_settings(tmp_path, sqlite_url, broker_url=DEAD_BROKER)
    ready = TestClient(create_app(settings)).get("/api/v1/ready")
    assert ready.status_code == 503
    assert ready.json()["database"] == "ok"
    assert ready.json()["broker"].startswith("unavailable")


def test_a_job_the_broker_could_not_take_is_failed_then_sent_on_retry(
    tmp_path: Path, sqlite_url: str
) -> None:
    down = at.make_settings(tmp_path, sqlite_url, broker_url=DEAD_BROKER)
    with session_scope(sqlite_url) as session:
        _, key = crud.create_api_key(session, name="k", role="admin")
    headers = {"X-API-Key": key, "Idempotency-Key": "nightly-1"}
    body = {"preset": "tiny-treegrpo"}

    started = time.monotonic()
    answer = TestClient(create_app(down)).post("/api/v1/jobs", json=body, headers=headers)
    assert time.monotonic() - started < 20
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    job_id = problem["job_id"]
    assert "broker" in problem["detail"] and str(job_id) in problem["detail"]
    with session_scope(sqlite_url) as session:
        row = session.get(Job, job_id)
        assert row is not None
        assert row.status == "failed"  # the row says what happened: never silently queued
        assert row.error is not None and "broker" in row.error

    # The broker is back: the same request (same key, same body) sends that very job.
    up = at.make_settings(tmp_path, sqlite_url)
    with TestClient(create_app(up)) as client:
        retry = client.post("/api/v1/jobs", json=body, headers=headers)
        assert retry.status_code == 200
        assert retry.json()["id"] == job_id and retry.json()["status"] == "queued"
        assert retry.json()["error"] is None
        assert len(list((up.broker_folder / "queue").glob("*.msg"))) == 1
        assert client.get("/api/v1/jobs").json()["count"] == 1


def test_resume_with_the_broker_down_is_a_503_and_the_job_stays_resumable(
    tmp_path: Path, sqlite_url: str
) -> None:
    job = at.new_job(sqlite_url)
    attempt = at.run_job(sqlite_url, job.id)
    at.finish(sqlite_url, job.id, attempt, "interrupted")
    with session_scope(sqlite_url) as session:
        _, key = crud.create_api_key(session, name="k", role="admin")
    down = at.make_settings(tmp_path, sqlite_url, broker_url=DEAD_BROKER)
    answer = TestClient(create_app(down)).post(
        f"/api/v1/jobs/{job.id}/resume", headers={"X-API-Key": key}
    )
    assert answer.status_code == 503
    with session_scope(sqlite_url) as session:
        row = session.get(Job, job.id)
        assert row is not None and row.status == "failed"  # resumable again
