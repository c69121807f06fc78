"""/jobs routes against SQLite and PostgreSQL: creation freezes the resolved config and sends a
real message to the filesystem queue after commit; listing, reading, state transitions, metrics,
trees, samples, logs and checkpoints."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import api_testing as at
import pytest
from fastapi.testclient import TestClient

from backend import crud, queue, storage
from backend.db import session_scope
from backend.models import Job
from backend.settings import Settings
from treegrpo.config import resolve_config

JOBS = "/api/v1/jobs"


def _queued_messages(settings: Settings) -> list[dict[str, object]]:
    folder = settings.broker_folder / "queue"
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.msg"))]


def test_create_with_a_preset_alone_freezes_the_resolved_config_and_enqueues(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    answer = client.post(JOBS, json={"kind": "train", "preset": "tiny-treegrpo"}, headers=auth)
    assert answer.status_code == 201, answer.text
    job = answer.json()
    expected = resolve_config("tiny-treegrpo").to_dict()
    assert job["config"] == expected
    assert job["status"] == "queued"
    assert job["preset"] == "tiny-treegrpo"
    assert job["name"] == "tiny-treegrpo"  # default name: the preset
    assert job["algorithm"] == "treegrpo"
    assert job["progress_total"] == expected["epochs"]
    assert job["progress"] == 0.0
    assert job["latest_reward"] is None
    assert job["params"] == {}
    # The row holds the same frozen config.
    with session_scope(settings.resolved_database_url) as session:
        row = session.get(Job, job["id"])
        assert row is not None and row.config == expected
    # A real Celery message for the task, carrying the job id, is in the filesystem queue.
    messages = _queued_messages(settings)
    assert len(messages) == 1
    headers = messages[0]["headers"]
    assert isinstance(headers, dict)
    assert headers["task"] == queue.TASK_TRAIN
    assert json.loads(str(headers["argsrepr"])) == [job["id"]]


def test_overrides_dotted_and_nested_are_applied(client: TestClient, auth: dict[str, str]) -> None:
    body = {
        "kind": "train",
        "name": "k4",
        "preset": "tiny-treegrpo",
        "config": {"tree.k": 3, "train": {"lr": 0.01}, "epochs": 5},
    }
    job = client.post(JOBS, json=body, headers=auth).json()
    assert job["config"]["tree"]["k"] == 3
    assert job["config"]["train"]["lr"] == 0.01
    assert job["progress_total"] == 5
    assert job["name"] == "k4"


def test_sample_and_evaluate_jobs_take_their_params(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    source = client.post(JOBS, json={"preset": "tiny-treegrpo"}, headers=auth).json()
    sample = client.post(
        JOBS,
        json={"kind": "sample", "preset": "tiny-treegrpo", "params": {"trees": 3}},
        headers=auth,
    )
    assert sample.status_code == 201, sample.text
    assert sample.json()["params"] == {"trees": 3}
    assert sample.json()["progress_total"] == 3
    evaluate = client.post(
        JOBS,
        json={
            "kind": "evaluate",
            "preset": "tiny-treegrpo",
            "params": {"source_job_id": source["id"], "samples_per_prompt": 2},
        },
        headers=auth,
    )
    assert evaluate.status_code == 201, evaluate.text
    assert evaluate.json()["params"]["source_job_id"] == source["id"]
    tasks = [m["headers"]["task"] for m in _queued_messages(settings)]  # type: ignore[index]
    assert sorted(tasks) == sorted([queue.TASK_TRAIN, queue.TASK_SAMPLE, queue.TASK_EVALUATE])


def test_html_and_script_are_stored_and_returned_verbatim_as_json_data(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    name = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'
    prompt = "<b>bold</b> </script><script>fetch('/steal')</script>"
    answer = client.post(
        JOBS,
        json={"preset": "tiny-treegrpo", "name": name, "config": {"prompts": [prompt]}},
        headers=auth,
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers["content-type"] == "application/json"
    job = answer.json()
    assert job["name"] == name
    assert job["config"]["prompts"] == [prompt]
    read = client.get(f"{JOBS}/{job['id']}")
    assert read.headers["content-type"] == "application/json"
    assert read.json()["name"] == name
    assert client.get(JOBS).json()["data"][0]["name"] == name
    # A prompt a worker logs with a tree comes back as data too.
    at.add_tree(settings.resolved_database_url, job["id"], 0, prompt=prompt)
    assert client.get(f"{JOBS}/{job['id']}/trees").json()["data"][0]["prompt"] == prompt


def test_list_filters_pages_and_counts(client: TestClient, auth: dict[str, str]) -> None:
    ids = [
        client.post(JOBS, json={"preset": "tiny-treegrpo"}, headers=auth).json()["id"]
        for _ in range(5)
    ]
    client.post(JOBS, json={"kind": "sample", "preset": "tiny-treegrpo"}, headers=auth)
    client.post(f"{JOBS}/{ids[0]}/cancel", headers=auth)

    everything = client.get(JOBS).json()
    assert everything["count"] == 6
    assert [job["id"] for job in everything["data"]] == sorted(
        [job["id"] for job in everything["data"]], reverse=True
    )
    page = client.get(JOBS, params={"limit": 2, "offset": 1}).json()
    assert page["count"] == 6
    assert [job["id"] for job in page["data"]] == [j["id"] for j in everything["data"][1:3]]
    trains = client.get(JOBS, params={"kind": "train"}).json()
    assert trains["count"] == 5
    both = client.get(JOBS, params=[("status", "cancelled"), ("status", "queued")]).json()
    assert both["count"] == 6
    cancelled = client.get(JOBS, params={"status": "cancelled"}).json()
    assert [job["id"] for job in cancelled["data"]] == [ids[0]]
    assert client.get(JOBS, params={"offset": 100}).json() == {"data": [], "count": 6}


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 501}, {"offset": -1}, {"status": "sleeping"}, {"kind": "bake"}],
)
def test_list_rejects_bad_paging_and_filters(client: TestClient, params: dict[str, object]) -> None:
    answer = client.get(JOBS, params=params)  # type: ignore[arg-type]
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"][0] == "query"


def test_get_one_job_and_unknown_ids(client: TestClient, auth: dict[str, str]) -> None:
    job = client.post(JOBS, json={"preset": "tiny-treegrpo"}, headers=auth).json()
    assert client.get(f"{JOBS}/{job['id']}").json() == job
    missing = client.get(f"{JOBS}/999999")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    problem = missing.json()
    assert problem["status"] == 404 and "999999" in problem["detail"]
    assert set(problem) >= {"type", "title", "status", "detail"}
    for path in ("/0", "/-1", "/abc", f"/{2**31}", f"/{2**70}"):
        assert client.get(JOBS + path).status_code == 422, path
    for suffix in ("metrics", "trees", "samples", "logs", "checkpoint", "events"):
        assert client.get(f"{JOBS}/999999/{suffix}").status_code == 404, suffix


def test_cancel_and_resume_follow_the_lifecycle(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    url = settings.resolved_database_url
    queued = client.post(JOBS, json={"preset": "tiny-treegrpo"}, headers=auth).json()
    cancelled = client.post(f"{JOBS}/{queued['id']}/cancel", headers=auth)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.post(f"{JOBS}/{queued['id']}/cancel", headers=auth)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"

    running = client.post(JOBS, json={"preset": "tiny-treegrpo"}, headers=auth).json()
    attempt = at.run_job(url, running["id"])
    conflict = client.post(f"{JOBS}/{running['id']}/resume", headers=auth)
    assert conflict.status_code == 409
    assert "running" in conflict.json()["detail"]
    stopping = client.post(f"{JOBS}/{running['id']}/cancel", headers=auth).json()
    assert stopping["status"] == "cancelling"
    assert client.post(f"{JOBS}/{running['id']}/cancel", headers=auth).json()["status"] == (
        "cancelling"
    )
    at.finish(url, running["id"], attempt, "interrupted")
    before = len(_queued_messages(settings))
    resumed = client.post(f"{JOBS}/{running['id']}/resume", headers=auth)
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    assert len(_queued_messages(settings)) == before + 1  # sent to the workers again
    assert client.post(f"{JOBS}/999999/cancel", headers=auth).status_code == 404
    assert client.post(f"{JOBS}/999999/resume", headers=auth).status_code == 404


def test_progress_and_latest_reward(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    url = settings.resolved_database_url
    job = client.post(JOBS, json={"preset": "tiny-treegrpo"}, headers=auth).json()
    attempt = at.run_job(url, job["id"])
    at.add_metrics(url, job["id"], range(2), attempt=attempt)  # steps 0, 1 of 2 epochs
    read = client.get(f"{JOBS}/{job['id']}").json()
    assert read["status"] == "running" and read["worker"] == "w1" and read["attempt"] == 1
    assert read["progress_step"] == 1 and read["progress"] == 0.5
    assert read["latest_reward"] == pytest.approx(0.1)
    assert read["started_at"] is not None and read["heartbeat_at"] is not None
    assert client.get(JOBS).json()["data"][0]["latest_reward"] == pytest.approx(0.1)


def test_metrics_filter_by_name_and_step(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    url = settings.resolved_database_url
    job = at.new_job(url)
    at.add_metrics(url, job.id, range(5))
    every = client.get(f"{JOBS}/{job.id}/metrics").json()
    assert every["count"] == 10 and len(every["data"]) == 10
    assert every["names"] == ["loss", "reward_mean"]
    rewards = client.get(
        f"{JOBS}/{job.id}/metrics", params={"name": "reward_mean", "since_step": 2}
    ).json()
    assert [(p["step"], p["name"]) for p in rewards["data"]] == [
        (3, "reward_mean"),
        (4, "reward_mean"),
    ]
    assert rewards["data"][0]["value"] == pytest.approx(0.3)
    limited = client.get(f"{JOBS}/{job.id}/metrics", params={"limit": 3}).json()
    assert len(limited["data"]) == 3 and limited["count"] == 10
    both = client.get(
        f"{JOBS}/{job.id}/metrics", params=[("name", "loss"), ("name", "reward_mean")]
    ).json()
    assert both["count"] == 10
    assert client.get(f"{JOBS}/{job.id}/metrics", params={"name": "a\x00b"}).status_code == 422


def test_trees_samples_and_one_tree(client: TestClient, settings: Settings) -> None:
    url = settings.resolved_database_url
    job = at.new_job(url)
    tree_id = at.add_tree(url, job.id, epoch=0, k=3)
    at.add_tree(url, job.id, epoch=1, k=2)
    at.add_samples(url, job.id, 0, ["a", "b"])
    at.add_samples(url, job.id, 2, ["c"])

    trees = client.get(f"{JOBS}/{job.id}/trees").json()
    assert trees["count"] == 2
    first = trees["data"][0]
    assert first["id"] == tree_id and first["epoch"] == 0 and first["k"] == 3
    assert first["nodes"] == 4 and first["leaves"] == 3
    # Leaf rewards only: 0.2, 0.4, 0.6 (the root's 0.5 is a backed-up value).
    assert first["best_reward"] == pytest.approx(0.6)
    assert first["mean_reward"] == pytest.approx(0.4)
    assert client.get(f"{JOBS}/{job.id}/trees", params={"epoch": 1}).json()["count"] == 1

    tree = client.get(f"/api/v1/trees/{tree_id}").json()
    assert tree["leaves"] == 3 and tree["best_reward"] == pytest.approx(0.6)
    assert tree["mean_reward"] == pytest.approx(0.4)
    nodes = tree["nodes"]
    assert len(nodes) == 4
    root, leaf = nodes[0], nodes[1]
    assert root["parent_id"] is None and leaf["parent_id"] == root["id"]
    assert leaf["log_prob"] == -1.5 and leaf["advantage"] == pytest.approx(0.1)
    assert leaf["rewards"] == {"brightness": pytest.approx(0.2)}
    assert leaf["image_url"] == "/api/v1/artifacts/jobs/1/trees/epoch-000000/tree-00/images/1.png"
    assert leaf["branch_job_id"] is None
    assert client.get("/api/v1/trees/999999").status_code == 404

    samples = client.get(f"{JOBS}/{job.id}/samples").json()
    assert samples["count"] == 3 and samples["epochs"] == [0, 2]
    assert samples["data"][0]["image_url"] == (
        f"/api/v1/artifacts/jobs/{job.id}/samples/epoch-000000/000.png"
    )
    only = client.get(f"{JOBS}/{job.id}/samples", params={"epoch": 2}).json()
    assert [s["prompt"] for s in only["data"]] == ["c"] and only["epochs"] == [0, 2]


def test_branch_creates_a_sample_job_from_a_node(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    url = settings.resolved_database_url
    parent = client.post(JOBS, json={"preset": "tiny-treegrpo"}, headers=auth).json()
    tree_id = at.add_tree(url, parent["id"], epoch=0)
    root = client.get(f"/api/v1/trees/{tree_id}").json()["nodes"][0]
    leaf = client.get(f"/api/v1/trees/{tree_id}").json()["nodes"][1]
    path = f"/api/v1/trees/{tree_id}/nodes/{root['id']}/branch"
    answer = client.post(path, json={"k": 4}, headers=auth)
    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert job["kind"] == "sample" and job["status"] == "queued"
    assert job["params"] == {"branch": {"tree_id": tree_id, "node_id": root["id"], "k": 4}}
    assert job["parent_job_id"] == parent["id"]
    assert job["config"] == parent["config"]
    assert _queued_messages(settings)[-1]["headers"]["task"] == queue.TASK_BRANCH  # type: ignore[index]
    # No body: k defaults to 3.
    default = client.post(path, headers=auth).json()
    assert default["params"]["branch"]["k"] == 3
    # A leaf has no steps left; unknown trees and nodes are 404; k is bounded; key required.
    leaf_path = f"/api/v1/trees/{tree_id}/nodes/{leaf['id']}/branch"
    assert client.post(leaf_path, headers=auth).status_code == 409
    unknown_tree = client.post(f"/api/v1/trees/999/nodes/{root['id']}/branch", headers=auth)
    assert unknown_tree.status_code == 404
    unknown_node = client.post(f"/api/v1/trees/{tree_id}/nodes/99999/branch", headers=auth)
    assert unknown_node.status_code == 404
    assert client.post(path, json={"k": 0}, headers=auth).status_code == 422
    assert client.post(path, json={"k": 3, "x": 1}, headers=auth).status_code == 422
    assert client.post(path, json={"k": 3}).status_code == 401
    # The same branch through POST /jobs params is validated against the rows.
    via_jobs = client.post(
        JOBS,
        json={
            "kind": "sample",
            "preset": "tiny-treegrpo",
            "params": {"branch": {"tree_id": tree_id, "node_id": 99999, "k": 2}},
        },
        headers=auth,
    )
    assert via_jobs.status_code == 422
    assert via_jobs.json()["detail"][0]["loc"] == ["body", "params", "branch", "node_id"]


def test_each_node_says_whether_it_can_be_branched_and_a_branch_refuses_the_same_way(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    url = settings.resolved_database_url
    parent = client.post(JOBS, json={"preset": "tiny-treegrpo"}, headers=auth).json()
    old = at.add_tree(url, parent["id"], epoch=1)
    # An inner node that is no branch point (a hidden ODE-chain state): no latent.
    inner = {**at.tree_nodes(1)[0], "node_index": 2, "parent_index": 0, "latent_path": None}
    with session_scope(url) as session:
        crud.add_tree(
            session, job_id=parent["id"], epoch=2, index=0, prompt="p", seed=1, window_start=0,
            k=1, depth=1, steps=6, backup="mean", nodes=[*at.tree_nodes(1), inner],
        )  # fmt: skip
    first = client.get(f"/api/v1/trees/{old}")
    root, leaf = first.json()["nodes"][:2]
    assert first.json()["latents_dropped_at"] is None
    assert (root["branchable"], root["branch_refusal"]) == (True, None)
    assert leaf["branchable"] is False and leaf["branch_refusal"].startswith("is a leaf")

    # Retention keeps the newest tree's latents only: the older tree can no longer branch.
    with session_scope(url) as session:
        # The reconciler's sweep finds the job over a limit of 1 tree, not over 2 (a window
        # query, on PostgreSQL and SQLite alike).
        assert crud.jobs_over_tree_latent_limit(session, keep=1) == [parent["id"]]
        assert crud.jobs_over_tree_latent_limit(session, keep=2) == []
        dropped = crud.drop_old_tree_latents(session, job_id=parent["id"], keep=1)
        assert crud.jobs_over_tree_latent_limit(session, keep=1) == []
    assert dropped == ["jobs/1/trees/epoch-000000/tree-00/latents"]
    again = client.get(f"/api/v1/trees/{old}", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 200, "the ETag must change when the latents are dropped"
    tree = again.json()
    assert tree["latents_dropped_at"] is not None
    root = tree["nodes"][0]
    assert root["branchable"] is False
    assert "dropped by retention" in root["branch_refusal"]
    listed = client.get(f"{JOBS}/{parent['id']}/trees").json()["data"]
    assert {t["epoch"]: t["latents_dropped_at"] is not None for t in listed} == {1: True, 2: False}
    refused = client.post(f"/api/v1/trees/{old}/nodes/{root['id']}/branch", headers=auth)
    assert refused.status_code == 409
    assert refused.json()["detail"] == f"node {root['id']} {root['branch_refusal']}"

    newest = client.get(f"/api/v1/trees/{old + 1}").json()["nodes"]
    assert newest[0]["branchable"] is True
    hidden = newest[-1]
    assert hidden["branchable"] is False
    assert "only branch points keep a latent" in hidden["branch_refusal"]
    path = f"/api/v1/trees/{old + 1}/nodes/{hidden['id']}/branch"
    assert client.post(path, headers=auth).json()["detail"] == (
        f"node {hidden['id']} {hidden['branch_refusal']}"
    )


def test_logs_read_from_an_offset(client: TestClient, settings: Settings) -> None:
    url = settings.resolved_database_url
    job = at.new_job(url)
    empty = client.get(f"{JOBS}/{job.id}/logs")
    assert empty.status_code == 200 and empty.text == ""
    assert empty.headers["x-next-offset"] == "0"
    log = settings.resolved_artifact_dir / storage.log_relpath(job.id)
    log.parent.mkdir(parents=True)
    log.write_text("epoch 0 <b>ok</b>\nepoch 1 ok\n")
    whole = client.get(f"{JOBS}/{job.id}/logs")
    assert whole.text == "epoch 0 <b>ok</b>\nepoch 1 ok\n"
    assert whole.headers["content-type"].startswith("text/plain")
    assert whole.headers["x-content-type-options"] == "nosniff"
    offset = int(whole.headers["x-next-offset"])
    assert offset == len(whole.content)
    with log.open("a") as handle:
        handle.write("epoch 2 ok\n")
    tail = client.get(f"{JOBS}/{job.id}/logs", params={"offset": offset})
    assert tail.text == "epoch 2 ok\n"
    assert int(tail.headers["x-next-offset"]) == offset + len("epoch 2 ok\n")
    part = client.get(f"{JOBS}/{job.id}/logs", params={"offset": 6, "limit": 1})
    assert part.text == "0"
    past = client.get(f"{JOBS}/{job.id}/logs", params={"offset": 10_000})
    assert past.text == "" and past.headers["x-next-offset"] == "10000"
    assert client.get(f"{JOBS}/{job.id}/logs", params={"offset": -1}).status_code == 422


def test_checkpoint_is_a_zip_of_the_checkpoint_folder(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    url = settings.resolved_database_url
    root = settings.resolved_artifact_dir
    job = at.new_job(url)
    assert client.get(f"{JOBS}/{job.id}/checkpoint").status_code == 404
    relpath = f"{storage.checkpoints_relpath(job.id)}/epoch-000002"
    folder = root / relpath
    (folder / "sub").mkdir(parents=True)
    (folder / "state.json").write_text('{"epoch": 2}')
    (folder / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 64)
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the store")
    (folder / "leak.txt").symlink_to(secret)
    attempt = at.run_job(url, job.id)
    with session_scope(url) as session:
        assert crud.set_checkpoint(session, job_id=job.id, attempt=attempt, path=relpath)
    answer = client.get(f"{JOBS}/{job.id}/checkpoint")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/zip"
    assert f'filename="job-{job.id}-epoch-000002.zip"' in answer.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == ["state.json", "sub/weights.bin"]  # no leak.txt
        assert archive.read("sub/weights.bin") == bytes(range(256)) * 64
    # A checkpoint path that leads out of the store is never served.
    with session_scope(url) as session:
        crud.set_checkpoint(session, job_id=job.id, attempt=attempt, path="../../etc")
    assert client.get(f"{JOBS}/{job.id}/checkpoint").status_code == 404


def test_export_is_a_zip_of_the_checkpoints_lora_folder(
    client: TestClient, settings: Settings
) -> None:
    """The trainer writes a LoRA checkpoint's diffusers export into it (lora/); the API zips that
    folder and nothing else, and says what to do for a full fine-tune."""
    url = settings.resolved_database_url
    job = at.new_job(url)
    answer = client.get(f"{JOBS}/{job.id}/export", params={"format": "lora"})
    assert answer.status_code == 404 and "no LoRA export" in answer.json()["detail"]
    relpath = f"{storage.checkpoints_relpath(job.id)}/epoch-000003"
    folder = settings.resolved_artifact_dir / relpath
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"peft names")
    attempt = at.run_job(url, job.id)
    with session_scope(url) as session:
        assert crud.set_checkpoint(session, job_id=job.id, attempt=attempt, path=relpath)
    full = client.get(f"{JOBS}/{job.id}/export")  # a full fine-tune: no lora/ folder
    assert full.status_code == 404
    assert f"treegrpo export {job.id} --format pipeline" in full.json()["detail"]
    (folder / "lora").mkdir()
    (folder / "lora" / "pytorch_lora_weights.safetensors").write_bytes(b"diffusers names")
    (folder / "lora" / "README.md").write_text("# card")
    answer = client.get(f"{JOBS}/{job.id}/export", params={"format": "lora"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/zip"
    assert f'filename="job-{job.id}-epoch-000003-lora.zip"' in answer.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert sorted(archive.namelist()) == ["README.md", "pytorch_lora_weights.safetensors"]
        assert archive.read("pytorch_lora_weights.safetensors") == b"diffusers names"
    # Only the formats the API builds are accepted (a pipeline is the CLI's).
    assert client.get(f"{JOBS}/{job.id}/export", params={"format": "pipeline"}).status_code == 422
    assert client.get(f"{JOBS}/999999/export").status_code == 404
