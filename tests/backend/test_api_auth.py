"""X-API-Key: required on every mutating route, on reads when reads_require_key; only hashes in
the database; the embedded local key."""

from __future__ import annotations

import stat
from pathlib import Path

import api_testing as at
import pytest
from fastapi.testclient import TestClient

from backend import crud
from backend.api import create_app
from backend.bootstrap import LOCAL_KEY_NAME, ensure_local_key, local_key_path, read_local_key
from backend.db import session_scope
from backend.models import ApiKey
from backend.settings import Settings

MUTATING = [
    ("/api/v1/jobs", {"preset": "tiny-treegrpo"}),
    ("/api/v1/jobs/1/cancel", None),
    ("/api/v1/jobs/1/resume", None),
    ("/api/v1/trees/1/nodes/1/branch", {"k": 2}),
]
READS = [
    "/api/v1/jobs",
    "/api/v1/jobs/1",
    "/api/v1/jobs/1/metrics",
    "/api/v1/jobs/1/trees",
    "/api/v1/jobs/1/samples",
    "/api/v1/jobs/1/logs",
    "/api/v1/jobs/1/checkpoint",
    "/api/v1/jobs/1/events",
    "/api/v1/trees/1",
    "/api/v1/artifacts/x.png",
    "/api/v1/models",
    "/api/v1/rewards",
    "/api/v1/presets",
    "/api/v1/prompt-sets",
]


def _assert_401(answer: object) -> None:
    assert answer.status_code == 401, answer.text  # type: ignore[attr-defined]
    assert answer.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    assert answer.headers["www-authenticate"].startswith("ApiKey")  # type: ignore[attr-defined]
    assert answer.json()["status"] == 401  # type: ignore[attr-defined]


@pytest.mark.parametrize(("path", "body"), MUTATING)
def test_mutating_routes_need_a_valid_unrevoked_key(
    client: TestClient, settings: Settings, path: str, body: dict[str, object] | None
) -> None:
    url = settings.resolved_database_url
    at.new_job(url)
    with session_scope(url) as session:
        row, key = crud.create_api_key(session, name="soon revoked", role="admin")
    _assert_401(client.post(path, json=body))
    _assert_401(client.post(path, json=body, headers={"X-API-Key": ""}))
    _assert_401(client.post(path, json=body, headers={"X-API-Key": "tgk_wrong"}))
    _assert_401(client.post(path, json=body, headers={"X-API-Key": "x" * 5000}))
    assert client.post(path, json=body, headers={"X-API-Key": key}).status_code != 401
    with session_scope(url) as session:
        crud.revoke_api_key(session, key_id=row.id)
    _assert_401(client.post(path, json=body, headers={"X-API-Key": key}))


def test_reads_are_open_by_default(client: TestClient) -> None:
    for path in READS:
        assert client.get(path).status_code != 401, path


def test_reads_require_a_key_when_configured(tmp_path: Path, sqlite_url: str) -> None:
    settings = at.make_settings(tmp_path, sqlite_url, reads_require_key=True)
    with session_scope(sqlite_url) as session:
        _, key = crud.create_api_key(session, name="reader", role="admin")
    at.new_job(sqlite_url)
    with TestClient(create_app(settings)) as client:
        for path in READS:
            _assert_401(client.get(path))
        assert client.get("/api/v1/jobs/1", headers={"X-API-Key": key}).status_code == 200
        # Probes and the schema stay open.
        assert client.get("/api/v1/health").status_code == 200
        assert client.get("/api/v1/ready").status_code == 200
        assert client.get("/openapi.json").status_code == 200


def test_only_a_hash_of_each_key_is_stored(settings: Settings, client: TestClient) -> None:
    url = settings.resolved_database_url
    with session_scope(url) as session:
        row, key = crud.create_api_key(session, name="hash check", role="admin")
    with session_scope(url) as session:
        stored = session.get(ApiKey, row.id)
        assert stored is not None
        values = [str(getattr(stored, c.name)) for c in ApiKey.__table__.columns]
    assert all(key not in value for value in values)
    assert stored.hashed_key == crud.api_keys.hash_key(key)
    assert key.startswith(stored.prefix) and len(stored.prefix) < len(key) // 3


def test_ensure_local_key_writes_a_private_file_and_reuses_it(
    tmp_path: Path, sqlite_url: str
) -> None:
    settings = at.make_settings(tmp_path, sqlite_url)
    key = ensure_local_key(settings)
    path = local_key_path(settings)
    assert path.read_text().strip() == key == read_local_key(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_local_key(settings) == key  # still valid: the same key
    with session_scope(sqlite_url) as session:
        active = crud.list_api_keys(session, include_revoked=False)
        assert [(row.name, row.hashed_key) for row in active] == [
            (LOCAL_KEY_NAME, crud.api_keys.hash_key(key))
        ]
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            "/api/v1/jobs", json={"preset": "tiny-treegrpo"}, headers={"X-API-Key": key}
        )
        assert answer.status_code == 201


def test_a_lost_or_revoked_local_key_is_replaced(tmp_path: Path, sqlite_url: str) -> None:
    settings = at.make_settings(tmp_path, sqlite_url)
    first = ensure_local_key(settings)
    local_key_path(settings).unlink()
    second = ensure_local_key(settings)
    assert second != first
    with session_scope(sqlite_url) as session:
        assert crud.verify_api_key(session, key=first) is None  # unrecoverable: retired
        assert crud.verify_api_key(session, key=second) is not None
        crud.revoke_api_key(session, name=LOCAL_KEY_NAME)
    third = ensure_local_key(settings)
    assert third not in (first, second)
    assert read_local_key(settings) == third
