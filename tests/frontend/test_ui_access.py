"""What the dashboard offers each role (frontend/access.py), without a browser."""

from __future__ import annotations

from dataclasses import replace

from ui_factories import job_json

from frontend.access import manage_refusal, refusal_html, submit_refusal
from frontend.client import Job

ALICE = {"key_id": 1, "name": "alice", "role": "member"}
ROOT = {"key_id": 3, "name": "root", "role": "admin"}
VERA = {"key_id": 4, "name": "vera", "role": "viewer"}


def _job(owner_key_id: int | None, owner: str | None) -> Job:
    return replace(Job.from_json(job_json(id=7)), owner_key_id=owner_key_id, owner=owner)


def test_a_member_manages_its_own_runs_only() -> None:
    assert manage_refusal(ALICE, _job(1, "alice")) is None
    refused = manage_refusal(ALICE, _job(2, "bob"))
    assert refused is not None and "belongs to key 'bob'" in refused
    ownerless = manage_refusal(ALICE, _job(None, None))
    assert ownerless is not None and "predates roles" in ownerless
    assert manage_refusal(ROOT, _job(2, "bob")) is None and manage_refusal(ROOT, None) is None


def test_a_viewer_may_neither_submit_nor_manage() -> None:
    assert submit_refusal(ALICE) is None and submit_refusal(ROOT) is None
    assert "is a viewer" in str(submit_refusal(VERA))
    assert "is a viewer" in str(manage_refusal(VERA, _job(4, "vera")))
    assert "paste an API key" in str(submit_refusal(None))


def test_the_reason_is_escaped() -> None:
    html = refusal_html(manage_refusal(ALICE, _job(2, "<b>x</b>")))
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert refusal_html(None) == ""
