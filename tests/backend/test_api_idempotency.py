"""Idempotency-Key on POST /jobs, and concurrent submissions through a live server: 200
submissions from 20 threads give exactly 200 rows; with repeated keys, exactly one row (and one
queued message) per key. On SQLite and PostgreSQL."""

from __future__ import annotations

import collections
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from api_testing import live_server
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from backend.db import session_scope
from backend.models import Job
from backend.settings import Settings

JOBS = "/api/v1/jobs"


def _rows(settings: Settings) -> int:
    with session_scope(settings.resolved_database_url) as session:
        return session.scalar(select(func.count(Job.id))) or 0


def _messages(settings: Settings) -> int:
    return len(list((settings.broker_folder / "queue").glob("*.msg")))


def test_same_key_and_body_give_the_same_job(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    body = {"kind": "train", "preset": "tiny-treegrpo", "config": {"epochs": 3}}
    headers = {**auth, "Idempotency-Key": "run-42"}
    first = client.post(JOBS, json=body, headers=headers)
    assert first.status_code == 201
    again = client.post(JOBS, json=body, headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    # Key order and defaults spelled out do not make another request.
    same = {"config": {"epochs": 3}, "preset": "tiny-treegrpo", "kind": "train", "params": {}}
    assert client.post(JOBS, json=same, headers=headers).json()["id"] == first.json()["id"]
    assert _rows(settings) == 1 and _messages(settings) == 1

    other = client.post(JOBS, json={**body, "config": {"epochs": 4}}, headers=headers)
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"
    assert "run-42" in other.json()["detail"]
    assert _rows(settings) == 1

    # Without a key, or with another key, the same body is a new job.
    assert client.post(JOBS, json=body, headers=auth).json()["id"] != first.json()["id"]
    assert (
        client.post(JOBS, json=body, headers={**auth, "Idempotency-Key": "run-43"}).status_code
        == 201
    )
    assert _rows(settings) == 3


def test_200_concurrent_submissions_make_200_rows(
    app: FastAPI, auth: dict[str, str], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One key queues all 200: beyond the default per-key quota, which is not what this tests.
    monkeypatch.setattr(settings, "max_queued_per_key", 0)
    body = {"kind": "train", "preset": "tiny-treegrpo"}
    with live_server(app) as server:
        local = threading.local()

        def submit(i: int) -> tuple[int, int]:
            if not hasattr(local, "http"):
                local.http = httpx.Client(base_url=server.url, headers=auth, timeout=60)
            answer = local.http.post(JOBS, json={**body, "name": f"job {i}"})
            return answer.status_code, answer.json().get("id", -1)

        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(submit, range(200)))
    assert collections.Counter(code for code, _ in results) == {201: 200}
    assert len({job_id for _, job_id in results}) == 200
    assert _rows(settings) == 200
    assert _messages(settings) == 200


def test_repeated_keys_under_concurrency_make_one_row_per_key(
    app: FastAPI, auth: dict[str, str], settings: Settings
) -> None:
    keys = [f"key-{n}" for n in range(10)]
    with live_server(app) as server:
        local = threading.local()

        def submit(i: int) -> tuple[str, int, int]:
            if not hasattr(local, "http"):
                local.http = httpx.Client(base_url=server.url, headers=auth, timeout=60)
            key = keys[i % len(keys)]
            answer = local.http.post(
                JOBS,
                json={"preset": "tiny-treegrpo", "name": key},
                headers={"Idempotency-Key": key},
            )
            return key, answer.status_code, answer.json()["id"]

        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(submit, range(200)))
    ids_by_key: dict[str, set[int]] = collections.defaultdict(set)
    created = collections.Counter()
    for key, code, job_id in results:
        assert code in (200, 201)
        ids_by_key[key].add(job_id)
        created[key] += code == 201
    assert all(len(ids) == 1 for ids in ids_by_key.values())
    assert created == dict.fromkeys(keys, 1)
    assert _rows(settings) == 10
    assert _messages(settings) == 10  # a replayed request is not sent again
