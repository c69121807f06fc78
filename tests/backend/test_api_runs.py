"""Run management and the dashboard's after-start surfaces (issue 18): rename, tags and notes,
soft delete, search, lanes and queue positions, when the next gallery and tree are due, branch
records beside the training tree, compare galleries, every config error at once, the quiet
access log, the favicon and manifest."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import api_testing as at
import pytest
from api_testing import make_settings
from fastapi.testclient import TestClient

from backend import crud, queue
from backend.api import create_app
from backend.api.app import QuietAccessLog
from backend.db import session_scope
from backend.settings import Settings

JOBS = "/api/v1/jobs"


def _messages(settings: Settings) -> list[dict[str, Any]]:
    folder = settings.broker_folder / "queue"
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.msg"))]


def _create(client: TestClient, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    answer = client.post(JOBS, json={"preset": "tiny-treegrpo", **body}, headers=auth)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_rename_tag_and_note_a_run(client: TestClient, auth: dict[str, str]) -> None:
    job = _create(client, auth, name="first try")
    assert job["tags"] == [] and job["notes"] == ""
    changed = client.patch(
        f"{JOBS}/{job['id']}",
        json={"name": "k=3 baseline", "tags": ["baseline", "k3", "baseline"], "notes": "seed 0"},
        headers=auth,
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["name"] == "k=3 baseline" and body["tags"] == ["baseline", "k3"]
    assert body["notes"] == "seed 0"
    # A field left out keeps its value.
    again = client.patch(f"{JOBS}/{job['id']}", json={"notes": "better"}, headers=auth).json()
    assert again["name"] == "k=3 baseline" and again["tags"] == ["baseline", "k3"]
    read = client.get(f"{JOBS}/{job['id']}").json()
    assert read["notes"] == "better" and read["tags"] == ["baseline", "k3"]
    assert client.get(JOBS).json()["data"][0]["tags"] == ["baseline", "k3"]
    # Bad tags, unknown fields, no key, unknown job.
    for bad in ({"tags": ['a"b']}, {"tags": [""]}, {"tags": ["x" * 51]}, {"colour": "red"}):
        assert client.patch(f"{JOBS}/{job['id']}", json=bad, headers=auth).status_code == 422
    assert client.patch(f"{JOBS}/{job['id']}", json={"name": "x"}).status_code == 401
    assert client.patch(f"{JOBS}/99999", json={"name": "x"}, headers=auth).status_code == 404


def test_delete_is_soft_refused_while_active_and_restorable(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    url = settings.resolved_database_url
    job = _create(client, auth)
    tree_id = at.add_tree(url, job["id"], epoch=0)
    # Queued, then running: refused with 409 (cancel first).
    assert client.delete(f"{JOBS}/{job['id']}", headers=auth).status_code == 409
    attempt = at.run_job(url, job["id"])
    refused = client.delete(f"{JOBS}/{job['id']}", headers=auth)
    assert refused.status_code == 409 and "cancel" in refused.json()["detail"]
    at.finish(url, job["id"], attempt, "succeeded")
    assert client.delete(f"{JOBS}/{job['id']}").status_code == 401
    gone = client.delete(f"{JOBS}/{job['id']}", headers=auth)
    assert gone.status_code == 204 and gone.content == b""
    # Hidden everywhere; the row stays (soft delete), and nothing is purged yet: the delete
    # can be undone for a day (the default grace period).
    assert client.get(f"{JOBS}/{job['id']}").status_code == 404
    assert client.get(f"{JOBS}/{job['id']}/metrics").status_code == 404
    assert client.get(f"/api/v1/trees/{tree_id}").status_code == 404
    assert client.get(JOBS).json() == {"data": [], "count": 0}
    assert client.delete(f"{JOBS}/{job['id']}", headers=auth).status_code == 404
    with session_scope(url) as session:
        row = crud.get_job(session, job_id=job["id"], include_deleted=True)
        assert row.deleted_at is not None and row.purged_at is None
    assert all(m["headers"]["task"] != queue.TASK_PURGE for m in _messages(settings))
    # Listed among the recently deleted, with the time its purge is due (a day later).
    deleted = client.get(f"{JOBS}/deleted").json()
    assert deleted["count"] == 1 and deleted["data"][0]["id"] == job["id"]
    item = deleted["data"][0]
    due = datetime.fromisoformat(item["purge_after"]) - datetime.fromisoformat(item["deleted_at"])
    assert due == timedelta(days=1)
    # Restored: as it was, everywhere again; a second restore has nothing to undo.
    assert client.post(f"{JOBS}/{job['id']}/restore").status_code == 401
    back = client.post(f"{JOBS}/{job['id']}/restore", headers=auth)
    assert back.status_code == 200, back.text
    assert back.json()["status"] == "succeeded" and back.json()["id"] == job["id"]
    assert client.get(f"/api/v1/trees/{tree_id}").status_code == 200
    assert [j["id"] for j in client.get(JOBS).json()["data"]] == [job["id"]]
    assert client.get(f"{JOBS}/deleted").json() == {"data": [], "count": 0}
    assert client.post(f"{JOBS}/{job['id']}/restore", headers=auth).status_code == 404
    assert client.post(f"{JOBS}/99999/restore", headers=auth).status_code == 404


def test_delete_purges_at_once_without_a_grace_period(
    tmp_path: Path, db_url: str, api_key: str
) -> None:
    settings = make_settings(tmp_path, db_url, delete_grace_seconds=0)
    auth = {"X-API-Key": api_key}
    with TestClient(create_app(settings)) as client:
        job = _create(client, auth)
        at.finish(
            settings.resolved_database_url,
            job["id"],
            at.run_job(settings.resolved_database_url, job["id"]),
            "succeeded",
        )
        assert client.delete(f"{JOBS}/{job['id']}", headers=auth).status_code == 204
    purge = _messages(settings)[-1]
    assert purge["headers"]["task"] == queue.TASK_PURGE
    assert purge["headers"]["argsrepr"] == f"[{job['id']}]"


def test_search_by_name_tag_preset_algorithm_and_status(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    url = settings.resolved_database_url
    a = _create(client, auth, name="TreeGRPO k=3 50%_off")
    b = _create(client, auth, name="dance baseline", config={"algorithm": "dancegrpo"})
    c = _create(client, auth, name="tree k=4", preset="digits-treegrpo")
    client.patch(f"{JOBS}/{a['id']}", json={"tags": ["paper", "k3"]}, headers=auth)
    client.patch(f"{JOBS}/{b['id']}", json={"tags": ["paper", "héllo"]}, headers=auth)
    at.finish(url, c["id"], at.run_job(url, c["id"]), "failed")

    def ids(**params: Any) -> list[int]:
        answer = client.get(JOBS, params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["count"] == len(body["data"])
        return [job["id"] for job in body["data"]]

    assert ids(q="tree") == [c["id"], a["id"]]  # case-insensitive part of the name
    assert ids(q="50%_") == [a["id"]]  # LIKE wildcards are literal
    assert ids(q="0%x") == []
    assert ids(tag="paper") == [b["id"], a["id"]]
    assert ids(tag=["paper", "k3"]) == [a["id"]]
    assert ids(tag="héllo") == [b["id"]]
    assert ids(tag="pap") == []  # a tag matches whole
    assert ids(preset="digits-treegrpo") == [c["id"]]
    assert ids(algorithm="dancegrpo") == [b["id"]]
    assert ids(algorithm=["dancegrpo", "treegrpo"]) == [c["id"], b["id"], a["id"]]
    assert ids(status="failed") == [c["id"]]
    assert ids(q="tree", status="queued") == [a["id"]]
    assert client.get(JOBS, params={"q": "x" * 201}).status_code == 422


def test_lanes_queue_positions_and_queue_counts(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    url = settings.resolved_database_url
    first = _create(client, auth)
    sample = _create(client, auth, kind="sample")
    second = _create(client, auth)
    assert (first["lane"], sample["lane"], second["lane"]) == (
        "training",
        "interactive",
        "training",
    )
    # The POST answer already says where the job waits.
    assert (first["queue_position"], sample["queue_position"], second["queue_position"]) == (
        1,
        1,
        2,
    )
    # Messages go to each lane's queue.
    sent = {m["headers"]["id"]: m for m in _messages(settings)}
    assert len(sent) == 3
    routed = sorted(m["properties"]["delivery_info"]["routing_key"] for m in sent.values())
    assert routed == sorted([queue.QUEUE, queue.INTERACTIVE_QUEUE, queue.QUEUE])
    at.run_job(url, first["id"])
    listed = {job["id"]: job for job in client.get(JOBS).json()["data"]}
    assert listed[first["id"]]["queue_position"] is None
    assert listed[second["id"]]["queue_position"] == 1
    assert client.get(f"{JOBS}/{sample['id']}").json()["queue_position"] == 1
    assert client.get("/api/v1/queues").json() == {
        "training": {"queued": 1, "running": 1},
        "interactive": {"queued": 1, "running": 0},
    }


def test_a_train_job_says_when_its_next_gallery_tree_and_checkpoint_come(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    url = settings.resolved_database_url
    every = {"epochs": 8, "sample_every": 10, "log_tree_every": 10, "checkpoint_every": 3}
    job = _create(client, auth, config=every)
    schedule = job["schedule"]
    # Stored epochs count finished epochs; the final epoch always logs all three, so an
    # 8-epoch run's last gallery (and trees) are epoch 8.
    assert schedule == {
        **every,
        "next_gallery_epoch": 8,
        "next_tree_epoch": 1,
        "next_checkpoint_epoch": 3,
    }
    attempt = at.run_job(url, job["id"])
    with session_scope(url) as session:
        crud.heartbeat(session, job_id=job["id"], attempt=attempt, progress_step=3)
    later = client.get(f"{JOBS}/{job['id']}").json()["schedule"]
    assert (later["next_gallery_epoch"], later["next_tree_epoch"]) == (8, 8)
    assert later["next_checkpoint_epoch"] == 6
    sample = _create(client, auth, kind="sample")
    assert sample["schedule"] is None


def test_branches_sit_beside_the_training_tree(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    url = settings.resolved_database_url
    parent = _create(client, auth)
    tree_id = at.add_tree(url, parent["id"], epoch=0, k=3)
    before = client.get(f"/api/v1/trees/{tree_id}").json()
    root = before["nodes"][0]
    made = client.post(
        f"/api/v1/trees/{tree_id}/nodes/{root['id']}/branch", json={"k": 2}, headers=auth
    ).json()
    assert made["lane"] == "interactive" and made["queue_position"] == 1
    # The record is there at once (no nodes yet); the training tree is untouched.
    waiting = client.get(f"/api/v1/trees/{tree_id}").json()
    assert {k: v for k, v in waiting.items() if k != "branches"} == {
        k: v for k, v in before.items() if k != "branches"
    }
    (record,) = waiting["branches"]
    assert record["job_id"] == made["id"] and record["node_id"] == root["id"]
    assert record["job_status"] == "queued" and record["nodes"] == [] and record["k"] == 2
    # The worker's result: 2 children of the root, each with a leaf below it.
    grown = [
        {"node_index": i, "parent_index": None, "depth": 1, "step_index": 1, "t": 0.8,
         "sigma": 0.7, "is_leaf": False, "advantage": 0.5, "latent_path": f"b/{i}.st"}
        for i in range(2)
    ] + [
        {"node_index": 2 + i, "parent_index": i, "depth": 1, "step_index": 6, "t": 0.0,
         "sigma": 0.0, "is_leaf": True, "reward": 0.9 + 0.05 * i, "rewards": {"b": 0.9},
         "image_path": f"jobs/1/x/{i}.png"}
        for i in range(2)
    ]  # fmt: skip
    with session_scope(url) as session:
        branch = crud.branch_of_job(session, job_id=made["id"])
        assert branch is not None
        crud.replace_branch_nodes(session, branch_id=branch.id, nodes=grown)
        crud.replace_branch_nodes(session, branch_id=branch.id, nodes=grown)  # replaces
    after = client.get(f"/api/v1/trees/{tree_id}").json()
    assert after["nodes"] == before["nodes"]
    assert (after["leaves"], after["mean_reward"]) == (before["leaves"], before["mean_reward"])
    (record,) = after["branches"]
    assert len(record["nodes"]) == 4 and record["leaves"] == 2
    assert record["best_reward"] == pytest.approx(0.95)
    assert record["mean_reward"] == pytest.approx(0.925)
    children = [n for n in record["nodes"] if n["parent_id"] is None]
    assert len(children) == 2 and all(n["advantage"] == 0.5 for n in children)
    summary = client.get(f"{JOBS}/{parent['id']}/trees").json()["data"][0]
    assert (summary["nodes"], summary["leaves"]) == (len(before["nodes"]), before["leaves"])
    assert client.get(f"/api/v1/trees/{tree_id}/branches").json()["count"] == 1
    # Branching again from a node the branch grew; a branch leaf has no steps left.
    again = client.post(
        f"/api/v1/trees/{tree_id}/branch-nodes/{children[0]['id']}/branch", headers=auth
    )
    assert again.status_code == 201, again.text
    assert again.json()["params"]["branch"] == {
        "tree_id": tree_id,
        "branch_node_id": children[0]["id"],
        "k": 3,
    }
    nested = client.get(f"/api/v1/trees/{tree_id}/branches").json()["data"][1]
    assert nested["from_branch_node_id"] == children[0]["id"] and nested["node_id"] is None
    leaf = next(n for n in record["nodes"] if n["is_leaf"])
    path = f"/api/v1/trees/{tree_id}/branch-nodes/{leaf['id']}/branch"
    assert client.post(path, headers=auth).status_code == 409
    assert (
        client.post(f"/api/v1/trees/{tree_id}/branch-nodes/9999/branch", headers=auth).status_code
        == 404
    )


def test_compare_shows_galleries_side_by_side_at_one_epoch(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    url = settings.resolved_database_url
    a = _create(client, auth, name="tree")
    b = _create(client, auth, name="dance", config={"algorithm": "dancegrpo"})
    for epoch in (0, 4, 8):
        at.add_samples(url, a["id"], epoch, ["p1", "p2"])
    for epoch in (0, 5):
        at.add_samples(url, b["id"], epoch, ["p1", "p2"])
    compare = "/api/v1/compare/gallery"
    latest_common = client.get(compare, params={"job_id": [a["id"], b["id"]]}).json()
    assert latest_common["epoch"] == 0 and latest_common["same_noise"] is True
    assert latest_common["prompts"] == ["p1", "p2"]
    at6 = client.get(compare, params={"job_id": [a["id"], b["id"]], "epoch": 6}).json()
    assert [run["epoch"] for run in at6["runs"]] == [4, 5]
    assert [run["name"] for run in at6["runs"]] == ["tree", "dance"]
    assert at6["runs"][0]["epochs"] == [0, 4, 8]
    first = at6["runs"][0]["items"][0]
    assert first["prompt"] == "p1" and first["image_url"].endswith("epoch-000004/000.png")
    assert client.get(compare, params={"job_id": [a["id"]]}).status_code == 422
    assert client.get(compare, params={"job_id": [a["id"], 9999]}).status_code == 404


def test_every_config_error_is_reported_at_once(client: TestClient, auth: dict[str, str]) -> None:
    answer = client.post(
        JOBS,
        json={"preset": "tiny-treegrpo", "config": {"tree.k": 99, "epochs": 0, "bogus": 1}},
        headers=auth,
    )
    assert answer.status_code == 422
    locs = sorted(tuple(item["loc"]) for item in answer.json()["detail"])
    assert locs == [("body", "config", "bogus"), ("body", "config", "epochs"),
                    ("body", "config", "tree.k")]  # fmt: skip
    assert all(item["type"] == "config_error" for item in answer.json()["detail"])


def test_a_tracker_without_its_package_is_refused_at_submit(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    answer = client.post(
        JOBS,
        json={"preset": "tiny-treegrpo", "config": {"trackers": ["tensorboard", "wandb"]}},
        headers=auth,
    )
    assert answer.status_code == 422
    (item,) = answer.json()["detail"]
    assert item["loc"] == ["body", "config", "trackers"] and "pip install" in item["msg"]
    bad = client.post(
        JOBS, json={"preset": "tiny-treegrpo", "config": {"trackers": ["comet"]}}, headers=auth
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "trackers[0]"


def test_favicon_and_manifest_are_served(client: TestClient) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.content.startswith(b"\x89PNG\r\n\x1a\n")
    manifest = client.get("/manifest.json")
    assert manifest.status_code == 200 and manifest.json()["start_url"] == "/ui"


def test_the_access_log_leaves_out_successful_reads() -> None:
    quiet = QuietAccessLog()

    def line(method: str, status: int, path: str = "/api/v1/jobs/1") -> logging.LogRecord:
        args = ("127.0.0.1:5000", method, path, "1.1", status)
        return logging.LogRecord(
            "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', args, None
        )

    assert not quiet.filter(line("GET", 200)) and not quiet.filter(line("GET", 304))
    assert quiet.filter(line("POST", 201)) and quiet.filter(line("DELETE", 204))
    assert quiet.filter(line("GET", 404)) and quiet.filter(line("GET", 500))
    # The dashboard's own event posts (Gradio's queue: timer ticks, clicks) are left out too,
    # unless they fail; the API calls those events make are logged on their own.
    assert not quiet.filter(line("POST", 200, "/ui/gradio_api/queue/join?"))
    assert not quiet.filter(line("POST", 200, "/pre/ui/gradio_api/heartbeat/abc"))
    assert quiet.filter(line("POST", 500, "/ui/gradio_api/queue/join"))
    assert quiet.filter(line("POST", 200, "/api/v1/jobs/1/cancel"))
    assert len(logging.getLogger("uvicorn.access").filters) >= 1  # installed by create_app
