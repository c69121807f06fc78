"""Each compose service's own command line, run without Docker against the local PostgreSQL and
Redis: the migration, the API (and its healthcheck), the CPU worker, and a job through them."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import yaml
from deploy_helpers import ROOT, TINY_TRAIN, Tracker, free_port, ready, submit_and_wait, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REDIS_DB = 14  # a database number of its own, so other tests' queues never see these messages


def compose_services(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """The services as compose resolves them (variables from a .env like .env.example's)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose is missing (make test installs Debian's package)")
        pytest.skip("docker-compose not installed (make test installs it)")
    folder = tmp_path / "compose"
    folder.mkdir()
    (folder / "docker-compose.yml").write_text((ROOT / "docker-compose.yml").read_text())
    example = (ROOT / ".env.example").read_text()
    (folder / ".env").write_text(example.replace("POSTGRES_PASSWORD=", "POSTGRES_PASSWORD=pw"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "TREEGRPO_"))}
    result = subprocess.run(
        [binary, "--profile", "gpu", "config"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    services: dict[str, dict[str, Any]] = yaml.safe_load(result.stdout)["services"]
    return services


@pytest.fixture()
def database() -> Iterator[str]:
    name = f"treegrpo_compose_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def local_env(service: dict[str, Any], database: str, data: Path) -> dict[str, str]:
    """The service's compose environment with the hosts and paths of this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TREEGRPO_", "PYTEST_"))}
    for key, value in service["environment"].items():
        env[key] = str(value)
    assert env["TREEGRPO_DATABASE_URL"].startswith("postgresql+psycopg://treegrpo:pw@postgres:")
    assert env["TREEGRPO_BROKER_URL"] == "redis://redis:6379/0"
    env["TREEGRPO_DATABASE_URL"] = database
    env["TREEGRPO_BROKER_URL"] = f"redis://127.0.0.1:6379/{REDIS_DB}"
    env["TREEGRPO_ARTIFACT_DIR"] = str(data / "artifacts")
    env["TREEGRPO_DATA_DIR"] = str(data)
    env["OMP_NUM_THREADS"] = "1"
    return env


def executable(command: list[str]) -> list[str]:
    """The image's `treegrpo` is this venv's."""
    assert command[0] == "treegrpo", command
    return [str(Path(sys.executable).parent / "treegrpo"), *command[1:]]


def test_healthcheck_commands_of_postgres_and_redis_pass_against_the_local_services(
    tmp_path: Path,
) -> None:
    services = compose_services(tmp_path)
    pg_check = services["postgres"]["healthcheck"]["test"]
    assert pg_check[0] == "CMD-SHELL" and pg_check[1].startswith("pg_isready")
    pg_isready = shutil.which("pg_isready")
    if pg_isready:
        args = shlex.split(pg_check[1])
        args = [a for a in args if a not in ("treegrpo",)]  # the local server has its own roles
        args = [pg_isready, "-h", "127.0.0.1", *[a for a in args[1:] if a not in ("-U", "-d")]]
        assert subprocess.run(args, capture_output=True, timeout=10).returncode == 0
    redis_check = services["redis"]["healthcheck"]["test"]
    assert redis_check[:2] == ["CMD", "redis-cli"]
    assert redis.Redis(host="127.0.0.1", port=6379).execute_command(*redis_check[2:]) is True


def test_migrate_api_and_worker_commands_run_a_job_against_postgres_and_redis(
    tmp_path: Path, database: str
) -> None:
    services = compose_services(tmp_path)
    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()

    migrate = services["migrate"]
    result = subprocess.run(
        executable(migrate["command"]),
        env=local_env(migrate, database, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr

    api_service, worker_service = services["api"], services["worker"]
    port = free_port()
    api_command = executable(api_service["command"])
    api_command[api_command.index("--port") + 1] = str(port)
    api_command[api_command.index("--host") + 1] = "127.0.0.1"
    env = local_env(api_service, database, tmp_path)
    key_run = subprocess.run(
        [str(Path(sys.executable).parent / "treegrpo"), "api-key", "create", "compose-test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert key_run.returncode == 0, key_run.stderr
    key = re.search(r"tgk_\S+", key_run.stdout)
    assert key is not None, key_run.stdout

    log = (tmp_path / "services.log").open("wb")
    api = subprocess.Popen(
        api_command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    worker = subprocess.Popen(
        executable(worker_service["command"]),
        env=local_env(worker_service, database, tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    tracker = Tracker(api, worker)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("the API to be ready", lambda: ready(url), 120, tracker)
        check = api_service["healthcheck"]["test"]
        assert check[:2] == ["CMD", "python"]
        probe = [sys.executable, *check[2:]]
        probe[-1] = probe[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        assert subprocess.run(probe, timeout=30).returncode == 0

        job = submit_and_wait(url, key.group(0), TINY_TRAIN, 240, tracker)
        assert job["status"] == "succeeded", job
    finally:
        for process in (api, worker):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in (api, worker):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
        tracker.kill_all()
        log.close()
        print((tmp_path / "services.log").read_text()[-4000:])
    assert tracker.alive() == []
