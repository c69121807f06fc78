"""A job whose reward server needs a key: the key is stored with `treegrpo secret set`, the job
names it (`api_key_secret`), a real worker runs the job against a real `reward-serve` that checks
the key, and then the key's value is nowhere: not in the database file, not in any API answer,
not in the job log, not in any artifact (trees, galleries, checkpoints)."""

from __future__ import annotations

import argparse
import io
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from worker_stack import DIGITS_SMALL, make_stack

from backend import crud
from backend.api import create_app
from backend.cli import register_secret
from backend.db import session_scope
from backend.queue import QUEUE
from backend.settings import get_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rewardserve"))
from reward_server import ROOT, reward_server


def _store_secret(name: str, value: str, host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`treegrpo secret set NAME --host HOST` with the value piped on stdin."""
    parser = argparse.ArgumentParser(prog="treegrpo")
    register_secret(parser.add_subparsers())
    monkeypatch.setattr(sys, "stdin", io.StringIO(value + "\n"))
    args = parser.parse_args(["secret", "set", name, "--host", host])
    get_settings.cache_clear()
    try:
        assert args.func(args) == 0
    finally:
        get_settings.cache_clear()


@pytest.mark.slow
def test_a_secret_reaches_the_reward_server_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-" + uuid.uuid4().hex
    secrets_key = "sealing-" + uuid.uuid4().hex
    with (
        reward_server("--reward", "digit_judge", "--api-key", secret) as server,
        make_stack("filesystem", tmp_path, secrets_key=secrets_key) as stack,
    ):
        monkeypatch.setenv("TREEGRPO_DATABASE_URL", stack.url)
        monkeypatch.setenv("TREEGRPO_SECRETS_KEY", secrets_key)
        _store_secret("reward-key", secret, urlsplit(server.url).netloc, monkeypatch)
        with session_scope(stack.url) as session:
            _, api_key = crud.create_api_key(session, name="secret-test", role="admin")
        answers: list[str] = []
        overrides = {**DIGITS_SMALL, "epochs": 1, "sample_every": 0, "reward": "remote"}
        with TestClient(create_app(stack.settings)) as client:
            headers = {"X-API-Key": api_key}

            def submit(options: dict[str, str]) -> dict:
                config = {**overrides, "reward_options": {"remote": {"url": server.url, **options}}}
                answer = client.post(
                    "/api/v1/jobs",
                    json={"kind": "train", "preset": "digits-treegrpo", "config": config},
                    headers=headers,
                )
                answers.append(answer.text)
                return {**answer.json(), "http": answer.status_code}

            # The value itself in a config is refused, with the way out.
            refused = submit({"api_key": secret})
            assert refused["http"] == 422
            assert "api_key_secret: NAME" in answers[-1] and "api_key_env: NAME" in answers[-1]

            job = submit({"api_key_secret": "reward-key"})
            assert job["http"] == 201, answers[-1]
            stack.queue = QUEUE  # the API sends to the default queue
            stack.start_worker("secret", env={"PYTHONPATH": str(ROOT)})
            final = stack.wait_status(job["id"], ("succeeded", "failed"), timeout=240)
            assert final["status"] == "succeeded", stack.explain(job["id"])()

            job_id = job["id"]
            reads = [
                "/api/v1/jobs",
                f"/api/v1/jobs/{job_id}",
                f"/api/v1/jobs/{job_id}/logs",
                f"/api/v1/jobs/{job_id}/metrics",
                f"/api/v1/jobs/{job_id}/trees",
                f"/api/v1/jobs/{job_id}/samples",
            ]
            for path in reads:
                answer = client.get(path, headers=headers)
                assert answer.status_code == 200, (path, answer.text)
                answers.append(answer.text)
            trees = client.get(f"/api/v1/jobs/{job_id}/trees", headers=headers).json()["data"]
            tree = client.get(f"/api/v1/trees/{trees[0]['id']}", headers=headers)
            answers.append(tree.text)
            # The server scored every leaf (the key was right), so the tree shows rewards.
            leaves = [node for node in tree.json()["nodes"] if node["is_leaf"]]
            assert leaves and all(node["reward"] is not None for node in leaves)
            for node in tree.json()["nodes"][:3]:
                if node.get("image_url"):
                    answers.append(client.get(node["image_url"], headers=headers).text)

        assert answers and not [text for text in answers if secret in text]
        encoded = secret.encode()
        files = [path for path in stack.root.rglob("*") if path.is_file()]
        assert any(path.suffix == ".db" for path in files)
        assert any("checkpoint" in str(path) for path in files)
        leaked = [str(path) for path in files if encoded in path.read_bytes()]
        assert leaked == []
        log = stack.log(job_id)
        assert "succeeded" in log and secret not in log
