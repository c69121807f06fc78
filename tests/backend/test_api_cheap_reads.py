"""Cheaper reads: list items without the config, ETag / If-None-Match on job, tree and metrics
reads, the hand-made JSON equal to the schema's own, and the latest reward kept on the job row."""

from __future__ import annotations

import api_testing as at
import pytest
from fastapi.testclient import TestClient

from backend import crud
from backend.db import session_scope
from backend.models import Job
from backend.schemas import JobPublic, JobSummary
from backend.settings import Settings

JOBS = "/api/v1/jobs"


def test_list_items_leave_the_config_to_the_job_read(
    client: TestClient, auth: dict[str, str]
) -> None:
    created = client.post(JOBS, json={"preset": "tiny-treegrpo"}, headers=auth).json()
    item = client.get(JOBS).json()["data"][0]
    assert "config" not in item
    whole = client.get(f"{JOBS}/{created['id']}").json()
    # Everything else of the list item is what the job read says, config, schedule and a
    # multi-node job's machines aside.
    assert {k: v for k, v in whole.items() if k not in ("config", "schedule", "nodes")} == item
    assert whole["nodes"] == []  # one machine
    assert whole["schedule"]["next_gallery_epoch"] == whole["config"]["epochs"]
    assert whole["config"] == created["config"] and whole["config"]["epochs"] >= 1
    assert set(item) == set(JobSummary.model_fields)


def test_the_hand_made_json_is_the_schema_s_own(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    """The hot routes skip pydantic: their bytes must still be what the models would write
    (datetimes with 'Z', progress, a NaN-free latest reward, the config as stored)."""
    url = settings.resolved_database_url
    job = client.post(JOBS, json={"preset": "tiny-treegrpo"}, headers=auth).json()
    attempt = at.run_job(url, job["id"])
    at.add_metrics(url, job["id"], range(3), attempt=attempt)
    read = client.get(f"{JOBS}/{job['id']}")
    assert read.headers["content-type"] == "application/json"
    body = read.json()
    assert JobPublic.model_validate(body).model_dump(mode="json") == body
    assert body["started_at"].endswith("Z") and body["progress_step"] == 2
    assert body["progress"] == pytest.approx(min(1.0, 2 / body["progress_total"]))
    listed = client.get(JOBS).json()["data"][0]
    assert JobSummary.model_validate(listed).model_dump(mode="json") == listed
    # A write's answer (POST, cancel) has the same fields as the read.
    cancelled = client.post(f"{JOBS}/{job['id']}/cancel", headers=auth).json()
    assert set(cancelled) == set(body)


def _revalidate(client: TestClient, route: str) -> str:
    """GET, then GET with its ETag: 304 with no body and the same ETag. Returns the ETag."""
    first = client.get(route)
    assert first.status_code == 200, first.text
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    again = client.get(route, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    # Weak form, a list, and "*" match too; another tag does not.
    assert client.get(route, headers={"If-None-Match": f'"x", W/{etag}'}).status_code == 304
    assert client.get(route, headers={"If-None-Match": "*"}).status_code == 304
    assert client.get(route, headers={"If-None-Match": '"other"'}).status_code == 200
    return etag


def test_etags_on_job_tree_and_metrics_change_with_the_data(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    url = settings.resolved_database_url
    job = at.new_job(url)
    attempt = at.run_job(url, job.id)
    tree_id = at.add_tree(url, job.id, epoch=0)
    job_route, tree_route = f"{JOBS}/{job.id}", f"/api/v1/trees/{tree_id}"
    metrics_route = f"{JOBS}/{job.id}/metrics"
    job_tag = _revalidate(client, job_route)
    tree_tag = _revalidate(client, tree_route)
    metrics_tag = _revalidate(client, metrics_route)

    # A heartbeat with progress changes the job; a new point changes the metrics and the job's
    # latest reward; a branch's children change the tree.
    at.add_metrics(url, job.id, range(1, 2), attempt=attempt)
    changed = client.get(job_route, headers={"If-None-Match": job_tag})
    assert changed.status_code == 200 and changed.headers["etag"] != job_tag
    assert changed.json()["latest_reward"] == pytest.approx(0.1)
    fresh = client.get(metrics_route, headers={"If-None-Match": metrics_tag})
    assert fresh.status_code == 200 and fresh.json()["count"] == 2
    with session_scope(url) as session:
        tree = crud.get_tree(session, tree_id=tree_id)
        leaf = next(node for node in tree.nodes if node.is_leaf)
        leaf.reward = 0.99
        session.commit()
    regrown = client.get(tree_route, headers={"If-None-Match": tree_tag})
    assert regrown.status_code == 200 and regrown.headers["etag"] != tree_tag
    # An unknown id is still a 404, whatever the header.
    assert client.get(f"{JOBS}/999999", headers={"If-None-Match": "*"}).status_code == 404


def test_a_post_with_if_none_match_still_gets_its_answer(
    client: TestClient, auth: dict[str, str]
) -> None:
    first = client.post(JOBS, json={"preset": "tiny-treegrpo"}, headers=auth)
    headers = {**auth, "If-None-Match": "*"}
    second = client.post(JOBS, json={"preset": "tiny-treegrpo"}, headers=headers)
    assert second.status_code == 201 and second.json()["id"] == first.json()["id"] + 1


def test_the_job_row_keeps_its_latest_reward(settings: Settings) -> None:
    url = settings.resolved_database_url
    job = at.new_job(url)

    def latest() -> tuple[float | None, int | None]:
        with session_scope(url) as session:
            row = session.get(Job, job.id)
            assert row is not None
            return row.latest_reward, row.latest_reward_step

    assert latest() == (None, None)
    at.add_metrics(url, job.id, range(4))  # reward_mean 0.1 * step
    assert latest() == (pytest.approx(0.3), 3)
    with session_scope(url) as session:
        # Rewriting an older step, or writing another metric, leaves the latest alone.
        crud.upsert_metrics(session, job_id=job.id, step=1, values={"reward_mean": 5.0})
        crud.upsert_metrics(session, job_id=job.id, step=9, values={"loss": 1.0})
        assert latest() == (pytest.approx(0.3), 3)
        # A resume drops points past its checkpoint: the latest is the last one left.
        crud.delete_metrics_after(session, job_id=job.id, step=1)
        assert latest() == (pytest.approx(5.0), 1)
        crud.delete_metrics_after(session, job_id=job.id, step=-1)
        assert latest() == (None, None)
