"""Bad input is a 422 naming the field and the reason (never a 500), and is not stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from api_testing import make_settings
from fastapi.testclient import TestClient

from backend import crud
from backend.api import create_app
from backend.db import session_scope
from backend.settings import Settings

JOBS = "/api/v1/jobs"


def _error(answer: Any) -> dict[str, Any]:
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, list) and detail
    error: dict[str, Any] = detail[0]
    assert set(error) >= {"loc", "msg", "type"}
    return error


@pytest.mark.parametrize(
    ("body", "loc", "reason"),
    [
        # unknown keys, at the top and inside the config
        ({"kind": "train", "colour": "red"}, ["body", "colour"], "Extra inputs"),
        ({"config": {"bogus": 1}}, ["body", "config", "bogus"], "unknown setting 'bogus'"),
        ({"config": {"tree.zz": 1}}, ["body", "config", "tree.zz"], "unknown setting 'zz'"),
        ({"config": {"tree": {"zz": 1}}}, ["body", "config", "tree.zz"], "unknown setting"),
        # wrong types
        ({"kind": "bake"}, ["body", "kind"], "Input should be"),
        ({"name": 5}, ["body", "name"], "valid string"),
        ({"config": []}, ["body", "config"], "valid dictionary"),
        ({"config": {"epochs": "ten"}}, ["body", "config", "epochs"], "expected an integer"),
        ({"config": {"tree.k": 0}}, ["body", "config", "tree.k"], "must be >= 2"),
        ({"config": {"train.lr": True}}, ["body", "config", "train.lr"], ""),
        # lengths
        ({"name": "x" * 201}, ["body", "name"], "at most 200 characters"),
        ({"preset": "p" * 201}, ["body", "preset"], "at most 200 characters"),
        ({"preset": ""}, ["body", "preset"], "at least 1 character"),
        (
            {"config": {"prompts": ["p" * 501]}},
            ["body", "config", "prompts[0]"],
            "at most 500 characters",
        ),
        # a preset that does not exist
        ({"preset": "no-such-preset"}, ["body", "preset"], "unknown preset 'no-such-preset'"),
        # text PostgreSQL cannot store
        ({"name": "a\x00b"}, ["body", "name"], "NUL"),
        ({"config": {"prompts": ["a\x00b"]}}, ["body", "config", "prompts", 0], "NUL"),
        # kind-specific params
        ({"params": {"trees": 2}}, ["body", "params", "trees"], "Extra inputs"),
        ({"kind": "sample", "params": {"trees": "many"}}, ["body", "params", "trees"], "integer"),
        ({"kind": "sample", "params": {"trees": 65}}, ["body", "params", "trees"], "less than"),
        (
            {"kind": "evaluate", "params": {"source_job_id": 424242}},
            ["body", "params", "source_job_id"],
            "no job 424242",
        ),
        (
            {"kind": "evaluate", "params": {"source_job_id": 2**40}},
            ["body", "params", "source_job_id"],
            "less than or equal",
        ),
    ],
)
def test_bad_bodies_name_field_and_reason(
    client: TestClient,
    auth: dict[str, str],
    body: dict[str, Any],
    loc: list[Any],
    reason: str,
) -> None:
    body = {"preset": "tiny-treegrpo", **body}
    error = _error(client.post(JOBS, json=body, headers=auth))
    assert error["loc"] == loc
    assert reason in error["msg"]
    assert client.get(JOBS).json()["count"] == 0  # nothing stored


def test_lone_surrogates_are_refused(client: TestClient, auth: dict[str, str]) -> None:
    raw = b'{"preset": "tiny-treegrpo", "name": "\\ud800"}'
    error = _error(
        client.post(JOBS, content=raw, headers={**auth, "content-type": "application/json"})
    )
    assert error["loc"] == ["body", "name"]
    assert "unicode" in error["msg"].lower() or "surrogate" in error["msg"]
    # inside the config too (pydantic does not look into the free-form mapping)
    raw = b'{"preset": "tiny-treegrpo", "config": {"prompts": ["\\udc00x"]}}'
    error = _error(
        client.post(JOBS, content=raw, headers={**auth, "content-type": "application/json"})
    )
    assert error["loc"] == ["body", "config", "prompts", 0] and "surrogate" in error["msg"]


def test_malformed_and_oversized_bodies(client: TestClient, auth: dict[str, str]) -> None:
    json_headers = {**auth, "content-type": "application/json"}
    error = _error(client.post(JOBS, content=b'{"kind": ', headers=json_headers))
    assert error["type"] == "json_invalid"
    assert client.post(JOBS, content=b"[1, 2]", headers=json_headers).status_code == 422
    assert client.post(JOBS, content=b"null", headers=json_headers).status_code == 422
    nan = client.post(
        JOBS,
        content=b'{"preset": "tiny-treegrpo", "config": {"train.lr": NaN}}',
        headers=json_headers,
    )
    assert nan.status_code == 422
    huge = client.post(JOBS, content=b"x" * (2 * 1024 * 1024), headers=json_headers)
    assert huge.status_code == 413
    assert huge.headers["content-type"] == "application/problem+json"
    assert client.get(JOBS).json()["count"] == 0


def test_idempotency_key_is_bounded(client: TestClient, auth: dict[str, str]) -> None:
    error = _error(
        client.post(
            JOBS,
            json={"preset": "tiny-treegrpo"},
            headers={**auth, "Idempotency-Key": "k" * 201},
        )
    )
    assert error["loc"] == ["header", "idempotency-key"]


def test_errors_echo_long_inputs_only_clipped(client: TestClient, auth: dict[str, str]) -> None:
    answer = client.post(
        JOBS, json={"preset": "tiny-treegrpo", "name": "y" * 100_000}, headers=auth
    )
    assert answer.status_code == 422
    assert len(answer.content) < 2_000


def test_unknown_routes_and_methods_are_problems(client: TestClient) -> None:
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    method = client.put(f"{JOBS}/1")
    assert method.status_code == 405
    assert method.headers["content-type"] == "application/problem+json"


REMOTE = {"reward": "remote"}


@pytest.mark.parametrize(
    ("config", "loc", "reason"),
    [
        # `make up`'s defaults: a reward-serve (8100) and MLflow (5000) on loopback, nothing else.
        (
            {**REMOTE, "reward_options.remote.url": "http://127.0.0.1:8000/score"},
            "reward_options.remote.url",
            "127.0.0.1:8000 is not a host the operator lets jobs connect to",
        ),
        (
            {**REMOTE, "reward_options.remote.url": "ftp://127.0.0.1:8100/"},
            "reward_options.remote.url",
            "only http:// and https://",
        ),
        (
            {
                **REMOTE,
                "reward_options.remote.url": "http://127.0.0.1:8100/",
                "reward_options.remote.api_key_env": "HOME",
            },
            "reward_options.remote.api_key_env",
            "HOME is not a variable the operator lets jobs read",
        ),
        (
            {
                **REMOTE,
                "reward_options.remote.url": "http://127.0.0.1:8100/",
                "reward_options.remote.api_key_secret": "nope",
            },
            "reward_options.remote.api_key_secret",
            "no secret named 'nope'",
        ),
        ({"tracking.mlflow_uri": "sqlite:///x.db"}, "tracking.mlflow_uri", "never to a file"),
        ({"model": "/etc"}, "model", "file rule"),
        ({"model": "digits", "sampling.height": 500}, "sampling.height", "16x16 only, got 500"),
    ],
)
def test_what_a_job_may_reach_is_checked_at_submit(
    client: TestClient, auth: dict[str, str], config: dict[str, Any], loc: str, reason: str
) -> None:
    error = _error(
        client.post(JOBS, json={"preset": "digits-treegrpo", "config": config}, headers=auth)
    )
    assert error["loc"] == ["body", "config", loc]
    assert reason in error["msg"]
    assert client.get(JOBS).json()["count"] == 0


def test_allowed_destinations_pass_at_submit(client: TestClient, auth: dict[str, str]) -> None:
    config = {**REMOTE, "reward_options.remote.url": "http://localhost:8100/score"}
    answer = client.post(JOBS, json={"preset": "digits-treegrpo", "config": config}, headers=auth)
    assert answer.status_code == 201, answer.text


def auth_for(settings: Settings) -> dict[str, str]:
    with session_scope(settings.resolved_database_url) as session:
        _, key = crud.create_api_key(session, name="sizes", role="member")
    return {"X-API-Key": key}


def test_a_local_folders_size_rule_is_read_at_submit(tmp_path: Path, db_url: str) -> None:
    """Without torch: the SD3 folder's VAE (8x) and 2x2 patches make sizes multiples of 16, up
    to its position table (pos_embed_max_size 32 -> 512 px)."""
    folder = tmp_path / "models" / "sd3"
    for name, data in {
        "model_index.json": {"_class_name": "StableDiffusion3Pipeline"},
        "vae/config.json": {"block_out_channels": [8, 8, 8, 8]},
        "transformer/config.json": {"patch_size": 2, "sample_size": 16, "pos_embed_max_size": 32},
    }.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(data))
    settings = make_settings(tmp_path, db_url, model_roots=str(tmp_path / "models"))
    auth = auth_for(settings)
    with TestClient(create_app(settings)) as client:

        def submit(height: int) -> Any:
            config = {"model": str(folder), "sampling.height": height}
            body = {"preset": "digits-treegrpo", "config": config}
            return client.post(JOBS, json=body, headers=auth)

        error = _error(submit(500))
        assert error["loc"] == ["body", "config", "sampling.height"]
        assert "not a positive multiple of 16" in error["msg"]
        assert error["msg"].endswith("the nearest valid size is 496")  # 500 - 496 = 4 < 512 - 500
        error = _error(submit(1024))
        assert "larger than this model's maximum 512" in error["msg"]
        assert submit(256).status_code == 201


def test_a_member_may_name_a_secret_for_its_own_hosts_only(
    settings: Settings, client: TestClient
) -> None:
    """The API reads a secret's hosts, never its value (it has no secrets key)."""
    from backend.crud.secrets import set_secret

    with session_scope(settings.resolved_database_url) as session:
        set_secret(session, name="rk", value="sk-1", hosts=["localhost:8100"], secrets_key="s")
    member = auth_for(settings)

    def submit(url: str) -> Any:
        config = {**REMOTE, "reward_options.remote": {"url": url, "api_key_secret": "rk"}}
        body = {"preset": "digits-treegrpo", "config": config}
        return client.post(JOBS, json=body, headers=member)

    assert submit("http://localhost:8100/score").status_code == 201
    error = _error(submit("http://127.0.0.1:8100/score"))  # allowed host, not the secret's
    assert error["loc"] == ["body", "config", "reward_options.remote.api_key_secret"]
    assert "may be sent only to localhost:8100, not to 127.0.0.1:8100" in error["msg"]
