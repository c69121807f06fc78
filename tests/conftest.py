"""Test-session setup shared by every test package: offline environment, gpu and integration gates."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from functools import cache

import pytest
from network_guard import no_network

# Offline by design (ARCHITECTURE.md section 8): set before any test module imports a hub client.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
# torch.compile's kernel cache inside the checkout, not the machine-wide /tmp/torchinductor_<user>:
# a compile killed mid-write there left a truncated .so that failed every later compile test.
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR",
    os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        ".pytest_cache",
        "torchinductor",
    ),
)
# `pytest -n 2` on 2 cores: one intra-op thread per worker, or torch's threads oversubscribe the
# machine and small-tensor tests run ~10x slower. Set before any test module imports torch.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

INTEGRATION_SERVICES: dict[str, tuple[str, int]] = {
    "PostgreSQL": ("127.0.0.1", 5432),
    "Redis": ("127.0.0.1", 6379),
}


def _accepts_tcp(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@cache
def _unreachable_services() -> tuple[str, ...]:
    return tuple(
        f"{name} at {host}:{port}"
        for name, (host, port) in INTEGRATION_SERVICES.items()
        if not _accepts_tcp(host, port)
    )


@cache
def _cuda_available() -> bool:
    import torch  # lazy: only sessions that collected a gpu test pay for importing torch

    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    in_ci = os.environ.get("CI", "").strip().lower() == "true"
    for item in items:
        if item.get_closest_marker("gpu") is not None and not _cuda_available():
            item.add_marker(pytest.mark.skip(reason="gpu test: torch.cuda is not available"))
        # Under CI=true integration tests always run: a missing service must fail them, not hide them.
        if (
            item.get_closest_marker("integration") is not None
            and not in_ci
            and _unreachable_services()
        ):
            missing = ", ".join(_unreachable_services())
            item.add_marker(
                pytest.mark.skip(reason=f"integration test: no TCP connection to {missing}")
            )


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test may reach beyond 127.0.0.1: the suite must pass with no route to the internet."""
    with no_network(monkeypatch):
        yield
