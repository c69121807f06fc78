"""Roles, owners, quotas and the audit log, tried the way a holder of one ordinary key would try
them, through the API (issue 23). Each refusal is a 4xx naming the role, field or setting, and
nothing changes: no row, no queue message, no edit, no audit entry of a change."""

from __future__ import annotations

import logging
from typing import Any

import api_testing as at
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from backend import crud
from backend.db import session_scope
from backend.models import AuditEntry, Job
from backend.settings import Settings

JOBS = "/api/v1/jobs"
BODY = {"kind": "train", "preset": "tiny-treegrpo", "config": {"epochs": 3}}


def _key(settings: Settings, name: str, role: str) -> dict[str, str]:
    with session_scope(settings.resolved_database_url) as session:
        _, key = crud.create_api_key(session, name=name, role=role)
    return {"X-API-Key": key}


@pytest.fixture
def keys(settings: Settings) -> dict[str, dict[str, str]]:
    return {
        name: _key(settings, name, role)
        for name, role in (
            ("alice", "member"),
            ("mallory", "member"),
            ("vera", "viewer"),
            ("root", "admin"),
        )
    }


def _jobs(settings: Settings) -> list[Job]:
    with session_scope(settings.resolved_database_url) as session:
        return list(session.scalars(select(Job).order_by(Job.id)))


def _messages(settings: Settings) -> int:
    return len(list((settings.broker_folder / "queue").glob("*.msg")))


def _audit(settings: Settings) -> list[tuple[str, str, str | None]]:
    with session_scope(settings.resolved_database_url) as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(row.key_name, row.action, row.target_id) for row in rows]


def _forbidden(answer: Any, needed: str) -> dict[str, Any]:
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = answer.json()
    assert problem["needed_role"] == needed
    assert f"the {needed} role" in problem["detail"]
    return problem


def test_me_tells_each_key_its_role(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    seen = {
        name: client.get("/api/v1/me", headers=headers).json() for name, headers in keys.items()
    }
    assert {name: me["role"] for name, me in seen.items()} == {
        "alice": "member",
        "mallory": "member",
        "vera": "viewer",
        "root": "admin",
    }
    assert [seen[n]["can_submit"] for n in ("vera", "alice", "root")] == [False, True, True]
    assert [seen[n]["can_manage_all"] for n in ("vera", "alice", "root")] == [False, False, True]
    assert client.get("/api/v1/me").status_code == 401


def test_a_viewer_cannot_submit_branch_or_change_anything(
    client: TestClient, keys: dict[str, dict[str, str]], settings: Settings
) -> None:
    job_id = client.post(JOBS, json=BODY, headers=keys["alice"]).json()["id"]
    viewer = keys["vera"]
    problem = _forbidden(client.post(JOBS, json=BODY, headers=viewer), "member")
    assert "'vera' is a viewer" in problem["detail"]
    for method, path, body in (
        ("PATCH", f"{JOBS}/{job_id}", {"name": "mine now"}),
        ("POST", f"{JOBS}/{job_id}/cancel", None),
        ("POST", f"{JOBS}/{job_id}/resume", None),
        ("DELETE", f"{JOBS}/{job_id}", None),
        ("POST", "/api/v1/trees/1/nodes/1/branch", {"k": 2}),
    ):
        _forbidden(client.request(method, path, json=body, headers=viewer), "member")
    # Reads stay open to it.
    assert client.get(f"{JOBS}/{job_id}", headers=viewer).json()["name"] == "tiny-treegrpo"
    jobs = _jobs(settings)
    assert [(j.id, j.status, j.name, j.deleted_at) for j in jobs] == [
        (job_id, "queued", "tiny-treegrpo", None)
    ]
    assert _messages(settings) == 1
    assert _audit(settings) == [("alice", "job.submit", str(job_id))]


def test_a_member_cannot_touch_another_members_job(
    client: TestClient, keys: dict[str, dict[str, str]], settings: Settings
) -> None:
    job_id = client.post(JOBS, json=BODY, headers=keys["alice"]).json()["id"]
    attacker = keys["mallory"]
    for method, path, body in (
        ("PATCH", f"{JOBS}/{job_id}", {"name": "pwned", "tags": ["x"], "notes": "hi"}),
        ("POST", f"{JOBS}/{job_id}/cancel", None),
        ("DELETE", f"{JOBS}/{job_id}", None),
    ):
        problem = _forbidden(client.request(method, path, json=body, headers=attacker), "admin")
        assert f"job {job_id}" in problem["detail"] and "alice" not in problem["detail"]
    job = _jobs(settings)[0]
    assert (job.status, job.name, job.tags, job.notes, job.deleted_at) == (
        "queued",
        "tiny-treegrpo",
        [],
        "",
        None,
    )
    # A stopped job cannot be resumed by the other member either.
    assert client.post(f"{JOBS}/{job_id}/cancel", headers=keys["alice"]).status_code == 200
    _forbidden(client.post(f"{JOBS}/{job_id}/resume", headers=attacker), "admin")
    assert _jobs(settings)[0].status == "cancelled"
    assert _messages(settings) == 1
    assert _audit(settings) == [
        ("alice", "job.submit", str(job_id)),
        ("alice", "job.cancel", str(job_id)),
    ]


def test_a_member_manages_its_own_runs_and_an_admin_everyones(
    client: TestClient, keys: dict[str, dict[str, str]], settings: Settings
) -> None:
    alice, root = keys["alice"], keys["root"]
    own = client.post(JOBS, json=BODY, headers=alice).json()
    assert (own["owner"], own["owner_key_id"]) == ("alice", own["owner_key_id"])
    renamed = client.patch(
        f"{JOBS}/{own['id']}", json={"name": "mine", "tags": ["a"]}, headers=alice
    )
    assert renamed.status_code == 200 and renamed.json()["owner"] == "alice"
    assert client.post(f"{JOBS}/{own['id']}/cancel", headers=alice).json()["status"] == "cancelled"
    assert client.post(f"{JOBS}/{own['id']}/resume", headers=alice).json()["status"] == "queued"
    # An admin manages a member's job, and a job from before roles (no owner).
    ownerless = at.new_job(settings.resolved_database_url, name="old")
    _forbidden(client.post(f"{JOBS}/{ownerless.id}/cancel", headers=alice), "admin")
    assert client.post(f"{JOBS}/{ownerless.id}/cancel", headers=root).status_code == 200
    assert client.post(f"{JOBS}/{own['id']}/cancel", headers=root).status_code == 200
    assert client.delete(f"{JOBS}/{own['id']}", headers=root).status_code == 204
    listed = {job["name"]: job["owner"] for job in client.get(JOBS).json()["data"]}
    assert listed == {"old": None}
    assert [(name, action) for name, action, _ in _audit(settings)] == [
        ("alice", "job.submit"),
        ("alice", "job.update"),
        ("alice", "job.cancel"),
        ("alice", "job.resume"),
        ("root", "job.cancel"),
        ("root", "job.cancel"),
        ("root", "job.delete"),
    ]


def test_an_idempotency_key_reused_by_another_key_is_a_new_request(
    client: TestClient, keys: dict[str, dict[str, str]], settings: Settings
) -> None:
    victim = client.post(JOBS, json=BODY, headers={**keys["alice"], "Idempotency-Key": "nightly"})
    assert victim.status_code == 201
    victim_id = victim.json()["id"]
    # The same string from another key: never the victim's job back, never a 409 naming it.
    stolen = {**keys["mallory"], "Idempotency-Key": "nightly"}
    own = client.post(JOBS, json=BODY, headers=stolen)
    assert own.status_code == 201, own.text
    assert own.json()["id"] != victim_id and own.json()["owner"] == "mallory"
    other_body = client.post(JOBS, json={**BODY, "config": {"epochs": 4}}, headers=stolen)
    assert other_body.status_code == 409
    assert other_body.json()["detail"].endswith(f"(job {own.json()['id']})")
    owners = [(job.owner_key_id is not None, job.idempotency_key) for job in _jobs(settings)]
    assert owners == [(True, "nightly"), (True, "nightly")]
    # Within one key it still deduplicates, and a different body is still a 409.
    replay = client.post(JOBS, json=BODY, headers={**keys["alice"], "Idempotency-Key": "nightly"})
    assert (replay.status_code, replay.json()["id"]) == (200, victim_id)
    assert len(_jobs(settings)) == 2


def test_a_config_nested_900_levels_is_a_422_without_a_traceback(
    client: TestClient,
    keys: dict[str, dict[str, str]],
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nested: dict[str, Any] = {}
    inner = nested
    for _ in range(900):
        inner["a"] = {}
        inner = inner["a"]
    caplog.set_level(logging.INFO)
    for field in ("config", "params"):
        answer = client.post(
            JOBS, json={**BODY, field: {"reward_options": nested}}, headers=keys["alice"]
        )
        assert answer.status_code == 422, answer.text[:500]
        (error,) = answer.json()["detail"]
        assert error["loc"] == ["body", field] and error["type"] == "too_deep"
        assert "nested more than 32 levels" in error["msg"]
    for field in ("config", "axes"):  # an experiment's base config and its axes' values
        body = {"preset": "tiny-treegrpo", "axes": {"seed": [0]}, "budget": {"epochs": 1}}
        body[field] = {"seed": [nested]} if field == "axes" else {"reward_options": nested}
        answer = client.post("/api/v1/experiments", json=body, headers=keys["alice"])
        assert answer.status_code == 422, answer.text[:500]
        (error,) = answer.json()["detail"]
        assert error["loc"] == ["body", field] and error["type"] == "too_deep"
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert sum(len(record.getMessage().splitlines()) for record in caplog.records) < 40
    assert _jobs(settings) == [] and _audit(settings) == []


def test_the_per_key_queue_quota_answers_429_with_retry_after(
    client: TestClient,
    keys: dict[str, dict[str, str]],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "max_queued_per_key", 2)
    alice = keys["alice"]
    first, second = (client.post(JOBS, json=BODY, headers=alice).json()["id"] for _ in range(2))
    over = client.post(JOBS, json=BODY, headers=alice)
    assert over.status_code == 429, over.text
    assert over.headers["retry-after"] == str(settings.quota_retry_seconds)
    problem = over.json()
    assert (problem["setting"], problem["limit"]) == ("TREEGRPO_MAX_QUEUED_PER_KEY", 2)
    assert "2 queued jobs" in problem["detail"]
    assert [job.id for job in _jobs(settings)] == [first, second] and _messages(settings) == 2
    # The quota is per key, and a queued job that stops frees its place.
    assert client.post(JOBS, json=BODY, headers=keys["mallory"]).status_code == 201
    client.post(f"{JOBS}/{first}/cancel", headers=alice)
    assert client.post(JOBS, json=BODY, headers=alice).status_code == 201
    assert client.post(JOBS, json=BODY, headers=alice).status_code == 429


def test_the_audit_log_is_for_admins_filtered_and_paged(
    client: TestClient, keys: dict[str, dict[str, str]], settings: Settings
) -> None:
    alice, mallory, root = keys["alice"], keys["mallory"], keys["root"]
    mine = client.post(JOBS, json=BODY, headers=alice).json()["id"]
    client.post(JOBS, json=BODY, headers=mallory)
    client.post(f"{JOBS}/{mine}/cancel", headers=mallory)  # refused: no entry
    client.patch(f"{JOBS}/{mine}", json={"notes": "a secret plan"}, headers=alice)
    client.post(f"{JOBS}/{mine}/cancel", headers=alice)
    for headers in (alice, keys["vera"]):
        _forbidden(client.get("/api/v1/audit", headers=headers), "admin")
    assert client.get("/api/v1/audit").status_code == 401
    page = client.get("/api/v1/audit", headers=root).json()
    assert page["count"] == 4
    assert [(e["key_name"], e["action"], e["target_id"]) for e in page["data"]] == [
        ("alice", "job.cancel", str(mine)),
        ("alice", "job.update", str(mine)),
        ("mallory", "job.submit", str(mine + 1)),
        ("alice", "job.submit", str(mine)),
    ]
    # Notes are free text: the log says they changed, not what they say.
    assert page["data"][1]["detail"] == {"notes": "13 characters"}
    alice_id = client.get("/api/v1/me", headers=alice).json()["key_id"]
    by_alice = client.get("/api/v1/audit", params={"key_id": alice_id, "limit": 1}, headers=root)
    assert by_alice.json()["count"] == 3 and len(by_alice.json()["data"]) == 1
    submits = client.get(
        "/api/v1/audit", params={"action": "job.submit", "offset": 1}, headers=root
    )
    assert [e["key_name"] for e in submits.json()["data"]] == ["alice"]
    with session_scope(settings.resolved_database_url) as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 4


def test_a_branch_belongs_to_the_member_who_grew_it_and_counts_in_its_quota(
    client: TestClient,
    keys: dict[str, dict[str, str]],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "max_queued_per_key", 1)
    source = client.post(JOBS, json=BODY, headers=keys["alice"]).json()["id"]
    tree_id = at.add_tree(settings.resolved_database_url, source, epoch=0)
    root = client.get(f"/api/v1/trees/{tree_id}").json()["nodes"][0]["id"]
    path = f"/api/v1/trees/{tree_id}/nodes/{root}/branch"
    # Any member may branch any tree: the branch is a new job of its own.
    grown = client.post(path, json={"k": 2}, headers=keys["mallory"])
    assert grown.status_code == 201, grown.text
    assert (grown.json()["owner"], grown.json()["parent_job_id"]) == ("mallory", source)
    # Alice has one job queued already: her branch would be her second.
    assert client.post(path, json={"k": 2}, headers=keys["alice"]).status_code == 429
    assert [job.owner_key_id is not None for job in _jobs(settings)] == [True, True]
    assert _audit(settings)[-1] == ("mallory", "job.branch", str(grown.json()["id"]))


def test_an_admin_manages_keys_over_http_and_a_member_cannot(
    client: TestClient, keys: dict[str, dict[str, str]], settings: Settings
) -> None:
    root = keys["root"]
    _forbidden(client.post("/api/v1/keys", json={"name": "x"}, headers=keys["alice"]), "admin")
    _forbidden(client.get("/api/v1/keys", headers=keys["vera"]), "admin")
    assert (
        client.post("/api/v1/keys", json={"name": "x", "role": "root"}, headers=root).status_code
        == 422
    )
    made = client.post("/api/v1/keys", json={"name": "ci", "role": "viewer"}, headers=root)
    assert made.status_code == 201, made.text
    new = made.json()
    assert new["role"] == "viewer" and new["key"].startswith(new["prefix"])
    as_new = {"X-API-Key": new["key"]}
    assert client.get("/api/v1/me", headers=as_new).json()["name"] == "ci"
    _forbidden(client.post(JOBS, json=BODY, headers=as_new), "member")
    unused = client.post("/api/v1/keys", json={"name": "spare"}, headers=root).json()
    listed = client.get("/api/v1/keys", headers=root)
    assert new["key"] not in listed.text and "hashed" not in listed.text
    assert {k["name"]: k["role"] for k in listed.json()["data"]}["ci"] == "viewer"
    # When each key was last used (it was always null): written on use, at most once a minute.
    used = {k["name"]: k["last_used_at"] for k in listed.json()["data"]}
    assert used["ci"] is not None and used["root"] is not None and used["spare"] is None
    with session_scope(settings.resolved_database_url) as session:
        assert not crud.touch_api_key(session, key_id=new["id"], stale_after_seconds=60)
        assert crud.touch_api_key(session, key_id=unused["id"], stale_after_seconds=60)
    assert client.delete(f"/api/v1/keys/{new['id']}", headers=root).status_code == 204
    assert client.get("/api/v1/me", headers=as_new).status_code == 401
    assert client.delete(f"/api/v1/keys/{new['id']}", headers=root).status_code == 404
    assert _audit(settings) == [
        ("root", "key.create", str(new["id"])),
        ("root", "key.create", str(unused["id"])),
        ("root", "key.revoke", str(new["id"])),
    ]
    with session_scope(settings.resolved_database_url) as session:
        details = [str(e.detail) for e in session.scalars(select(AuditEntry))]
    assert all(new["key"] not in detail for detail in details)
