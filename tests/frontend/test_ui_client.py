"""frontend/client.py against a fake transport (httpx.MockTransport): requests, results, errors."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from ui_factories import job_json, tree_json

from frontend.client import (
    ApiClient,
    ApiError,
    Conflict,
    KeyRequired,
    NotFound,
    Unauthorized,
    Unreachable,
    ValidationFailed,
    artifact_href,
    field_name,
)

Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler, key: str | None = None) -> tuple[ApiClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    return ApiClient("http://api.test", api_key=key, transport=httpx.MockTransport(record)), seen


def _problem(status: int, title: str, detail: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"type": "about:blank", "title": title, "status": status, "detail": detail},
        headers={"content-type": "application/problem+json"},
    )


def test_list_jobs_sends_filters_and_parses_jobs() -> None:
    client, seen = _client(
        lambda r: httpx.Response(200, json={"data": [job_json(id=4), job_json(id=3)], "count": 9})
    )
    page = client.list_jobs(statuses=["running", "queued"], kind="train", limit=2, offset=0)
    assert [j.id for j in page.jobs] == [4, 3] and page.count == 9
    request = seen[0]
    assert request.method == "GET" and request.url.path == "/api/v1/jobs"
    assert request.url.params.get_list("status") == ["running", "queued"]
    assert request.url.params["kind"] == "train" and request.url.params["limit"] == "2"
    job = page.jobs[0]
    assert job.status == "running" and job.latest_reward == 0.75 and job.active
    assert job.created_at is not None and job.created_at.tzinfo is not None
    assert abs(job.progress - 1 / 3) < 1e-9


def test_the_key_is_sent_only_when_given() -> None:
    client, seen = _client(lambda r: httpx.Response(200, json=job_json()))
    client.get_job(1)
    assert "x-api-key" not in seen[-1].headers
    keyed, seen_keyed = _client(lambda r: httpx.Response(200, json=job_json()), key=" k-123 ")
    keyed.get_job(1)
    keyed.cancel_job(1)
    assert [r.headers["x-api-key"] for r in seen_keyed] == ["k-123", "k-123"]


def test_mutating_calls_without_a_key_send_nothing() -> None:
    client, seen = _client(lambda r: httpx.Response(201, json=job_json()))
    for call in (
        lambda: client.create_job(kind="train", preset="digits-treegrpo"),
        lambda: client.cancel_job(1),
        lambda: client.resume_job(1),
        lambda: client.branch(1, 2, k=3),
    ):
        with pytest.raises(KeyRequired) as info:
            call()
        assert "API key" in info.value.message
    assert seen == []


def test_create_job_body_and_idempotency_key() -> None:
    client, seen = _client(lambda r: httpx.Response(201, json=job_json(id=12)), key="k")
    job = client.create_job(
        kind="train",
        name="run a",
        preset="digits-treegrpo",
        config={"epochs": 3},
        idempotency_key="tok-1",
    )
    assert job.id == 12
    request = seen[0]
    assert request.method == "POST" and request.url.path == "/api/v1/jobs"
    assert request.headers["idempotency-key"] == "tok-1"
    assert json.loads(request.content) == {
        "kind": "train",
        "name": "run a",
        "preset": "digits-treegrpo",
        "config": {"epochs": 3},
    }
    client.create_job(kind="train", preset=None)  # no name: the API picks a default
    assert "name" not in json.loads(seen[1].content)


def test_422_field_errors_are_keyed_by_the_form_field() -> None:
    body = {
        "detail": [
            {
                "loc": ["body", "config", "tree.k"],
                "msg": "must be at least 2",
                "type": "value_error",
            },
            {"loc": ["body", "config", "sampling", "steps"], "msg": "too many", "type": "x"},
            {"loc": ["body", "name"], "msg": "too long", "type": "string_too_long"},
            {"loc": ["body", "config", "tree.k"], "msg": "and an int", "type": "x"},
        ]
    }
    client, _ = _client(lambda r: httpx.Response(422, json=body), key="k")
    with pytest.raises(ValidationFailed) as info:
        client.create_job(kind="train", config={"tree.k": 1})
    err = info.value
    assert err.status == 422
    assert err.field_errors == {
        "tree.k": "must be at least 2; and an int",
        "sampling.steps": "too many",
        "name": "too long",
    }
    assert "tree.k: must be at least 2" in err.message


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, Unauthorized), (403, Unauthorized), (404, NotFound), (409, Conflict), (503, ApiError)],
)
def test_problem_json_errors(status: int, kind: type[ApiError]) -> None:
    client, _ = _client(lambda r: _problem(status, "Title here", "the detail"), key="k")
    with pytest.raises(kind) as info:
        client.cancel_job(5)
    assert info.value.status == status
    assert info.value.detail == "the detail"
    assert "the detail" in info.value.message
    if status == 401:
        assert "key" in info.value.message


def test_unreachable_api() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client, _ = _client(refuse)
    with pytest.raises(Unreachable) as info:
        client.list_jobs()
    assert "http://api.test" in info.value.message and info.value.status == 0


def test_metrics_logs_trees_samples_presets() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/metrics"):
            return httpx.Response(
                200,
                json={
                    "data": [{"step": 0, "name": "reward_mean", "value": 0.5}],
                    "count": 1,
                    "names": ["reward_mean", "loss"],
                },
            )
        if path.endswith("/logs"):
            return httpx.Response(200, text="line 1\n", headers={"X-Next-Offset": "107"})
        if path.endswith("/trees"):
            return httpx.Response(200, json={"data": [tree_json()], "count": 1})
        if path == "/api/v1/trees/1":
            return httpx.Response(200, json=tree_json())
        if path.endswith("/samples"):
            return httpx.Response(
                200,
                json={
                    "data": [
                        {
                            "id": 1,
                            "epoch": 0,
                            "index": 0,
                            "prompt": "p",
                            "reward": 0.2,
                            "rewards": {"digit_judge": 0.2},
                            "image_url": "/api/v1/artifacts/a.png",
                        }
                    ],
                    "count": 1,
                    "epochs": [10, 0],
                },
            )
        if path.endswith("/presets"):
            return httpx.Response(200, json={"data": [{"name": "p1", "config": {"epochs": 2}}]})
        return httpx.Response(404, json={"title": "Not Found", "status": 404, "detail": path})

    client, seen = _client(handler)
    page = client.metrics(3, names=["reward_mean"], since_step=4)
    assert page.points[0].value == 0.5 and page.names == ["reward_mean", "loss"]
    assert seen[-1].url.params["since_step"] == "4"
    log = client.logs(3, offset=100)
    assert log.text == "line 1\n" and log.next_offset == 107
    assert seen[-1].url.params["offset"] == "100"
    trees = client.trees(3)
    assert trees.trees[0].leaves == 27 and trees.trees[0].k == 3
    tree = client.tree(1)
    assert len(tree.nodes) == 177
    leaf = next(n for n in tree.nodes if n.is_leaf)
    assert [n.step_index for n in tree.path_to(leaf.id)] == list(range(11))
    samples = client.samples(3)
    assert samples.epochs == [0, 10] and samples.samples[0].rewards == {"digit_judge": 0.2}
    assert client.presets()[0].config == {"epochs": 2}
    with pytest.raises(NotFound):
        client.get_job(99)


def test_branch_posts_k() -> None:
    client, seen = _client(lambda r: httpx.Response(201, json=job_json(kind="sample")), key="k")
    client.branch(5, 77, k=4)
    assert seen[0].url.path == "/api/v1/trees/5/nodes/77/branch"
    assert json.loads(seen[0].content) == {"k": 4}


def test_field_name_and_artifact_href() -> None:
    assert field_name(["body", "config", "tree.k"]) == "tree.k"
    assert field_name(["body", "config", "train", "lr"]) == "train.lr"
    assert field_name(["body", "name"]) == "name"
    assert field_name(["query", "limit"]) == "limit"
    assert field_name([]) == "request"
    assert artifact_href(None) is None
    assert artifact_href("/api/v1/artifacts/a b.png") == "/api/v1/artifacts/a%20b.png"
    assert (
        artifact_href("/api/v1/artifacts/x.png", "http://h:1/")
        == "http://h:1/api/v1/artifacts/x.png"
    )
    assert artifact_href('/x"><b>') == "/x%22%3E%3Cb%3E"
