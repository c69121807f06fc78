"""The backend's commands: `treegrpo submit` end to end against a live uvicorn on loopback (the
test plays the worker through crud), `api-key`, `migrate` and `serve`."""

from __future__ import annotations

import getpass
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import api_testing as at
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from backend import migrate
from backend.api import create_app
from backend.db import session_scope
from backend.models import ApiKey, AuditEntry, Job
from backend.settings import Settings, get_settings
from treegrpo.cli import main as treegrpo_main

TREEGRPO = shutil.which("treegrpo", path=str(Path(sys.executable).parent)) or "treegrpo"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREEGRPO_")}
    env.update(extra)
    return env


def _submit(server_url: str, *args: str, key: str | None) -> list[str]:
    command = [TREEGRPO, "submit", "--api", server_url, *args]
    if key is not None:
        command += ["--api-key", key]
    return command


def _job(url: str, job_id: int) -> Job:
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


@pytest.fixture
def served(app: FastAPI) -> Any:
    with at.live_server(app) as server:
        yield server


def test_submit_prints_the_job_id_and_the_row_holds_the_request(
    served: at.LiveServer, api_key: str, settings: Settings
) -> None:
    done = subprocess.run(
        _submit(
            served.url,
            "--preset",
            "tiny-treegrpo",
            "--set",
            "epochs=3",
            "--set",
            "tree.k=3",
            "--name",
            "<i>cli</i>",
            key=api_key,
        ),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    job_id = int(done.stdout.strip())
    job = _job(settings.resolved_database_url, job_id)
    assert job.status == "queued" and job.name == "<i>cli</i>"
    assert job.config["epochs"] == 3 and job.config["tree"]["k"] == 3
    assert job.progress_total == 3


def test_submit_wait_follows_the_job_to_success(
    served: at.LiveServer, api_key: str, settings: Settings
) -> None:
    url = settings.resolved_database_url
    process = subprocess.Popen(
        _submit(served.url, "--preset", "tiny-treegrpo", "--set", "epochs=3", "--wait", key=None),
        env=_env(TREEGRPO_API_KEY=api_key),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        job_id = int(process.stdout.readline().strip())
        assert _job(url, job_id).status == "queued"
        # Play the worker: claim, three epochs of metrics, succeed.
        attempt = at.run_job(url, job_id)
        for step in range(3):
            time.sleep(0.1)
            at.add_metrics(url, job_id, range(step, step + 1), attempt=attempt)
        at.finish(url, job_id, attempt, "succeeded")
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "running" in err
    for step in range(3):
        assert f"epoch {step}/3  reward {0.1 * step:.4f}" in err
    assert f"job {job_id} succeeded" in err


def test_submit_wait_exits_nonzero_when_the_job_fails(
    served: at.LiveServer, api_key: str, settings: Settings
) -> None:
    url = settings.resolved_database_url
    process = subprocess.Popen(
        _submit(served.url, "--preset", "tiny-treegrpo", "--wait", key=api_key),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        job_id = int(process.stdout.readline().strip())
        attempt = at.run_job(url, job_id)
        at.finish(url, job_id, attempt, "failed", error="CUDA out of memory")
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    assert "failed" in err and "CUDA out of memory" in err


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """In-process CLI runs: no TREEGRPO_* from the outside, and a cwd of the test's own."""
    for name in list(os.environ):
        if name.startswith("TREEGRPO_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_submit_prints_validation_errors_readably(
    served: at.LiveServer,
    api_key: str,
    cli_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = _submit(served.url, "--preset", "tiny-treegrpo", "--set", "tree.k=0", key=api_key)
    assert treegrpo_main(args[1:]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "invalid request" in err
    # The field and the reason, and no traceback.
    assert "config.tree.k: must be >= 2, got 0" in err
    assert "Traceback" not in err
    assert treegrpo_main([*args[1:4], "--set", "novalue"]) == 2
    assert "--set 'novalue': expected key=value" in capsys.readouterr().err


def test_submit_without_a_usable_key_or_api(
    served: at.LiveServer,
    tmp_path: Path,
    cli_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = _submit(served.url, "--preset", "tiny-treegrpo", key=None)[1:]
    cli_env.setenv("TREEGRPO_DATA_DIR", str(tmp_path / "nowhere"))
    assert treegrpo_main(base) == 2
    assert "no API key" in capsys.readouterr().err
    assert treegrpo_main([*base, "--api-key", "tgk_wrong"]) == 2
    assert "401" in capsys.readouterr().err
    cli_env.setenv("TREEGRPO_API_KEY", "tgk_any")
    dead = ["submit", "--api", f"http://127.0.0.1:{at.free_port()}", "--preset", "x"]
    assert treegrpo_main(dead) == 3
    assert "cannot reach the API" in capsys.readouterr().err


def test_submit_reads_the_embedded_local_key(
    tmp_path: Path,
    sqlite_url: str,
    cli_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from backend.bootstrap import ensure_local_key

    settings = at.make_settings(tmp_path, sqlite_url)
    ensure_local_key(settings)
    cli_env.setenv("TREEGRPO_DATA_DIR", str(settings.data_dir))
    with at.live_server(create_app(settings)) as server:
        code = treegrpo_main(_submit(server.url, "--preset", "tiny-treegrpo", key=None)[1:])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert _job(sqlite_url, int(out)).status == "queued"


def test_api_key_create_list_revoke(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert treegrpo_main(["api-key", "--url", sqlite_url, "create", "ci bot"]) == 0
    captured = capsys.readouterr()
    key = captured.out.strip()
    assert key.startswith("tgk_") and "only time" in captured.err
    assert "role member" in captured.err  # the default: not an admin unless asked for
    assert treegrpo_main(["api-key", "--url", sqlite_url, "create", "ops", "--role", "admin"]) == 0
    capsys.readouterr()
    with session_scope(sqlite_url) as session:
        rows = session.scalars(select(ApiKey)).all()
        assert [(row.name, row.role) for row in rows] == [("ci bot", "member"), ("ops", "admin")]
        assert key not in rows[0].hashed_key
    with pytest.raises(SystemExit) as refused:
        treegrpo_main(["api-key", "--url", sqlite_url, "create", "x", "--role", "root"])
    assert refused.value.code == 2
    assert "invalid choice: 'root'" in capsys.readouterr().err

    assert treegrpo_main(["api-key", "--url", sqlite_url, "list"]) == 0
    listing = capsys.readouterr().out
    assert "ci bot" in listing and key[:10] in listing and key not in listing
    assert "member" in listing and "admin" in listing

    assert treegrpo_main(["api-key", "--url", sqlite_url, "revoke", "ci bot"]) == 0
    assert "revoked 1 key" in capsys.readouterr().out
    assert treegrpo_main(["api-key", "--url", sqlite_url, "revoke", "1"]) == 1
    assert "no active API key" in capsys.readouterr().err
    assert treegrpo_main(["api-key", "--url", sqlite_url, "revoke", "ops"]) == 0
    assert treegrpo_main(["api-key", "--url", sqlite_url, "list"]) == 0
    assert "no API keys" in capsys.readouterr().out
    assert treegrpo_main(["api-key", "--url", sqlite_url, "list", "--all"]) == 0
    assert "ci bot" in capsys.readouterr().out
    # Every change is in the audit log, made by the operator's login, never with the key.
    with session_scope(sqlite_url) as session:
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [(e.action, e.target_id, e.detail) for e in entries] == [
        ("key.create", "1", {"name": "ci bot", "role": "member"}),
        ("key.create", "2", {"name": "ops", "role": "admin"}),
        ("key.revoke", "ci bot", {"revoked": 1}),
        ("key.revoke", "ops", {"revoked": 1}),
    ]
    assert {e.key_name for e in entries} == {f"cli:{getpass.getuser()}"}
    assert all(e.key_id is None for e in entries)


def test_migrate_up_and_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert treegrpo_main(["migrate", "--url", url]) == 0
    assert f"at revision {migrate.head_revision()}" in capsys.readouterr().out
    assert treegrpo_main(["migrate", "--url", url, "--down", "base"]) == 0
    assert "base (empty)" in capsys.readouterr().out
    assert treegrpo_main(["migrate", "--url", url, "--revision", "nope"]) == 2
    assert "migration failed" in capsys.readouterr().err
    dead = "postgresql+psycopg://postgres:secret@127.0.0.1:1/x"
    assert treegrpo_main(["migrate", "--url", dead]) == 2
    err = capsys.readouterr().err
    assert "cannot use the database" in err and "secret" not in err


@pytest.mark.parametrize("command", ["serve", "migrate", "api-key", "submit"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        treegrpo_main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: treegrpo {command}" in capsys.readouterr().out


def _serve(folder: Path, port: int, *options: str) -> subprocess.Popen[str]:
    """`treegrpo serve --migrate` on `port` with its data under `folder`/data, in its own
    process group (stop it with os.killpg)."""
    return subprocess.Popen(
        [TREEGRPO, "serve", "--port", str(port), "--migrate", *options, "--log-level", "warning"],
        env=_env(TREEGRPO_DATA_DIR=str(folder / "data")),
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_ready(process: subprocess.Popen[str], port: int) -> None:
    """Until `treegrpo serve` on `port` answers /ready with 200 (90 s at most)."""
    deadline = time.monotonic() + 90
    while True:
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/api/v1/ready", timeout=2)
            break
        except httpx.TransportError:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert ready.status_code == 200, ready.text


@pytest.mark.slow
def test_serve_embedded_prints_the_url_and_local_key(tmp_path: Path) -> None:
    port = at.free_port()
    data = tmp_path / "data"
    process = _serve(tmp_path, port)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/api/v1" in first
        key_line = process.stdout.readline()
        assert key_line.startswith("Local API key: tgk_")
        key = key_line.split()[3]
        assert (data / "local-api-key").read_text().strip() == key
        _wait_ready(process, port)
        created = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/jobs",
            json={"preset": "tiny-treegrpo"},
            headers={"X-API-Key": key},
            timeout=30,
        )
        assert created.status_code == 201
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_serve_refuses_several_workers_with_the_dashboard_mounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dashboard keeps per-process state (Gradio's event queue, its download links): under
    `--workers 2` its events landed in processes that did not know them. Refused, with the way
    to do it, and nothing started."""
    monkeypatch.setenv("TREEGRPO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TREEGRPO_SERVE_UI", raising=False)
    get_settings.cache_clear()
    try:
        assert treegrpo_main(["serve", "--workers", "2", "--port", "1"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "--workers 2 with the dashboard mounted at /ui" in err
    assert "--no-ui" in err and "python -m frontend --api http://127.0.0.1:1" in err
    assert not (tmp_path / "data").exists()  # nothing was served or made


@pytest.mark.slow
def test_serve_no_ui_runs_several_api_processes_without_the_dashboard(tmp_path: Path) -> None:
    port = at.free_port()
    process = _serve(tmp_path, port, "--no-ui", "--workers", "2")
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/api/v1" in banner and "dashboard" not in banner
        _wait_ready(process, port)
        assert httpx.get(f"http://127.0.0.1:{port}/ui/", timeout=5).status_code == 404
        root = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert root.status_code == 307 and root.headers["location"] == "/docs"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_secret_changes_are_audited_without_their_values(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TREEGRPO_SECRETS_KEY", "k" * 40)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hunter2-value\n"))
    get_settings.cache_clear()
    try:
        assert (
            treegrpo_main(
                ["secret", "--url", sqlite_url, "set", "HF_TOKEN", "--host", "huggingface.co"]
            )
            == 0
        )
        assert treegrpo_main(["secret", "--url", sqlite_url, "delete", "HF_TOKEN"]) == 0
        assert treegrpo_main(["secret", "--url", sqlite_url, "delete", "HF_TOKEN"]) == 2
    finally:
        get_settings.cache_clear()
    capsys.readouterr()
    with session_scope(sqlite_url) as session:
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [(e.action, e.target_kind, e.target_id) for e in entries] == [
        ("secret.set", "secret", "HF_TOKEN"),
        ("secret.delete", "secret", "HF_TOKEN"),
    ]
    assert all("hunter2" not in str(e.detail) for e in entries)
    assert entries[0].detail["hosts"] == ["huggingface.co"]  # where the secret may now go
