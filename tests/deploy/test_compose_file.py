"""docker-compose.yml and docker/: what a `docker compose up` needs, checked without an engine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]


def compose_config(tmp_path: Path, env_text: str | None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("docker-compose is missing (make test installs Debian's package)")
        pytest.skip("docker-compose not installed (make test installs it)")
    (tmp_path / "docker-compose.yml").write_text(COMPOSE.read_text())
    if env_text is not None:
        (tmp_path / ".env").write_text(env_text)
    clean_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "TREEGRPO_"))
    }
    return subprocess.run(
        [binary, "--profile", "gpu", "config", "-q"],
        cwd=tmp_path,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_docker_compose_accepts_the_file_with_the_example_settings(tmp_path: Path) -> None:
    example = (ROOT / ".env.example").read_text()
    filled = example.replace("POSTGRES_PASSWORD=", "POSTGRES_PASSWORD=s3cret")
    result = compose_config(tmp_path, filled)
    assert result.returncode == 0, result.stderr


def test_a_missing_secret_fails_fast_and_says_which(tmp_path: Path) -> None:
    result = compose_config(tmp_path, (ROOT / ".env.example").read_text())
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_the_services_of_the_architecture_are_there() -> None:
    assert set(services()) == {
        "postgres",
        "redis",
        "migrate",
        "api",
        "worker",
        "worker-interactive",
        "worker-gpu",
        "reward",
        "minio",
        "minio-bucket",
    }


def test_reads_are_closed_by_default_where_the_network_reaches_the_api() -> None:
    env = services()["api"]["environment"]
    assert env["TREEGRPO_READS_REQUIRE_KEY"] == "${TREEGRPO_READS_REQUIRE_KEY:-true}"
    example = (ROOT / ".env.example").read_text().splitlines()
    assert "TREEGRPO_READS_REQUIRE_KEY=true" in example


def test_the_reward_server_is_a_gpu_profile_service_that_workers_can_reach_with_a_key() -> None:
    svc = services()
    reward = svc["reward"]
    assert reward["profiles"] == ["gpu"]
    command = reward["command"]
    assert command[:2] == ["treegrpo", "reward-serve"] and "--port" in command
    assert "TREEGRPO_REWARD_API_KEY" in reward["environment"]
    assert reward["healthcheck"]["test"] and "/ready" in " ".join(reward["healthcheck"]["test"])
    devices = reward["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    for name in ("worker", "worker-interactive", "worker-gpu"):
        assert "TREEGRPO_REWARD_API_KEY" in svc[name]["environment"], name
        assert "TREEGRPO_SECRETS_KEY" in svc[name]["environment"], name
    for secret in ("TREEGRPO_REWARD_API_KEY", "TREEGRPO_SECRETS_KEY"):
        assert secret not in svc["api"]["environment"]  # the API process reads no secret


def test_training_and_interactive_lanes_have_workers_of_their_own() -> None:
    svc = services()
    lanes = {name: svc[name]["command"][svc[name]["command"].index("--queues") + 1]
             for name in ("worker", "worker-interactive", "worker-gpu")}  # fmt: skip
    assert lanes == {
        "worker": "treegrpo",
        "worker-interactive": "treegrpo-interactive",
        "worker-gpu": "treegrpo",
    }
    assert "profiles" not in svc["worker-interactive"]
    assert svc["worker-interactive"]["environment"] == svc["worker"]["environment"]


def test_minio_is_an_s3_profile_and_every_studio_service_can_be_pointed_at_a_bucket() -> None:
    svc = services()
    for name in ("minio", "minio-bucket"):
        assert svc[name]["profiles"] == ["s3"], name
    assert svc["minio-bucket"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert "s3/treegrpo" in " ".join(svc["minio-bucket"]["command"])
    for name in ("migrate", "api", "worker", "worker-gpu"):
        env = svc[name]["environment"]
        for variable in ("TREEGRPO_ARTIFACT_URL", "TREEGRPO_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"):
            assert variable in env, (name, variable)


@pytest.mark.parametrize("name", ["postgres", "redis", "api"])
def test_long_running_dependencies_have_healthchecks(name: str) -> None:
    check = services()[name]["healthcheck"]
    assert check["test"] and check["retries"] >= 3


@pytest.mark.parametrize("name", ["pgdata", "redisdata", "artifacts"])
def test_state_lives_in_named_volumes(name: str) -> None:
    assert name in load_compose()["volumes"]


def test_start_order_waits_for_health_and_the_migration() -> None:
    svc = services()
    assert svc["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert svc["migrate"]["restart"] == "no"
    for name in ("api", "worker", "worker-gpu"):
        depends = svc[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
        assert depends["redis"] == {"condition": "service_healthy"}, name


def test_cpu_worker_is_always_on_and_gpu_worker_is_a_profile_with_a_device_reservation() -> None:
    svc = services()
    assert "profiles" not in svc["worker"]
    gpu = svc["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    grace = gpu["stop_grace_period"]
    assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) >= 60


def test_every_service_speaks_to_postgres_and_redis_by_service_name() -> None:
    for name in ("migrate", "api", "worker", "worker-gpu"):
        env = services()[name]["environment"]
        assert "@postgres:5432/" in env["TREEGRPO_DATABASE_URL"], name
        assert env["TREEGRPO_BROKER_URL"].startswith("redis://redis:"), name
        assert env["HF_HUB_OFFLINE"] == "1" and env["GRADIO_ANALYTICS_ENABLED"] == "False"


def test_every_built_image_comes_from_docker_and_its_copy_sources_exist() -> None:
    dockerfiles = set()
    for name, svc in services().items():
        if name in ("postgres", "redis", "minio", "minio-bucket"):  # upstream images
            assert "build" not in svc
            continue
        build = svc["build"]
        assert build["context"] == "."
        dockerfile = ROOT / build["dockerfile"]
        assert dockerfile.parent == ROOT / "docker" and dockerfile.is_file(), name
        dockerfiles.add(dockerfile)
    assert {p.name for p in dockerfiles} == {
        "api.Dockerfile",
        "worker-cpu.Dockerfile",
        "worker-gpu.Dockerfile",
    }
    for dockerfile in dockerfiles:
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY"):
                *sources, _target = line.split()[1:]
                for source in sources:
                    assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}"
        # Every image runs `treegrpo` commands that read the schema's revisions (migrate, and the
        # startup check of serve and worker): alembic.ini and migrations/ must be in it.
        copied = dockerfile.read_text()
        assert "COPY alembic.ini" in copied and "COPY migrations migrations" in copied, dockerfile


def test_worker_images_pin_the_torch_build_and_the_gpu_one_is_cuda() -> None:
    pins = (ROOT / "requirements/worker.txt").read_text()
    assert "torch==2.13.0" in pins
    cpu = (ROOT / "docker/worker-cpu.Dockerfile").read_text()
    gpu = (ROOT / "docker/worker-gpu.Dockerfile").read_text()
    assert "whl/cpu" in cpu
    assert gpu.startswith("#") and "ARG BASE_IMAGE=nvidia/cuda:" in gpu and "whl/cu" in gpu
    api = [line for line in (ROOT / "requirements/api.txt").read_text().splitlines()]
    assert not [line for line in api if line.strip().startswith("torch")]


def test_make_up_warns_only_when_bound_beyond_loopback_with_reads_open() -> None:
    from backend.up import exposure_warning

    assert exposure_warning("127.0.0.1", 8000, reads_require_key=False) is None
    assert exposure_warning("0.0.0.0", 8000, reads_require_key=True) is None
    warning = exposure_warning("0.0.0.0", 8000, reads_require_key=False)
    assert warning and "0.0.0.0" in warning and "TREEGRPO_READS_REQUIRE_KEY=true" in warning


def test_workers_read_the_hosts_hugging_face_cache_read_only_and_offline() -> None:
    for name in ("worker", "worker-interactive", "worker-gpu"):
        service = services()[name]
        mounts = [v for v in service["volumes"] if v.endswith(":/hf:ro")]
        assert mounts == ["${TREEGRPO_HF_CACHE:-~/.cache/huggingface}:/hf:ro"], name
        env = service["environment"]
        assert env["HF_HOME"] == "/hf" and env["HF_HUB_OFFLINE"] == "1", name


def test_jobs_reach_only_the_compose_services_and_mounts() -> None:
    """Issue 23: the operator lists default to the reward service, its key's variable and the
    workers' read-only mounts, for the API's check and the workers' alike."""
    for name in ("api", "worker", "worker-interactive", "worker-gpu"):
        env = services()[name]["environment"]
        assert env["TREEGRPO_OUTBOUND_HOSTS"] == "${TREEGRPO_OUTBOUND_HOSTS:-reward:8100}", name
        assert env["TREEGRPO_REFERABLE_ENV"] == (
            "${TREEGRPO_REFERABLE_ENV:-TREEGRPO_REWARD_API_KEY}"
        ), name
        assert env["TREEGRPO_MODEL_ROOTS"] == "${TREEGRPO_MODEL_ROOTS:-/app/models,/hf}", name
    api = services()["api"]["volumes"]
    assert "./models:/app/models:ro" in api  # the sizes check reads the models' config files
