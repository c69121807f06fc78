"""Starting and stopping real service processes in tests, and proving none is left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]

TINY_TRAIN: dict[str, Any] = {
    "kind": "train",
    "name": "deploy smoke",
    "preset": "digits-treegrpo",
    "config": {
        "epochs": 2,
        "prompts_per_epoch": 1,
        "sampling.steps": 4,
        "tree.k": 2,
        "tree.depth": 1,
        "log_tree_every": 1,
        "sample_every": 0,
        "checkpoint_every": 1,
        "device": "cpu",
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def layered_venv(clone: Path) -> None:
    """A venv in `clone` that sees this test run's installed packages through a .pth file, so
    `make` installs the clone itself (editable, its own entry points) without a download."""
    subprocess.run([sys.executable, "-m", "venv", str(clone / ".venv")], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = clone / ".venv" / "lib" / version / "site-packages"
    (site / "_parent_site.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


def fresh_clone(tmp: Path) -> Path:
    clone = tmp / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    return clone


class Tracker:
    """Remembers every descendant seen of a set of root processes."""

    def __init__(self, *roots: subprocess.Popen[Any]) -> None:
        self.roots = list(roots)
        self.seen: dict[int, float] = {}

    def add(self, root: subprocess.Popen[Any]) -> None:
        self.roots.append(root)

    def scan(self) -> None:
        for root in self.roots:
            try:
                process = psutil.Process(root.pid)
                for proc in [process, *process.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        self.seen.setdefault(proc.pid, proc.create_time())
            except psutil.NoSuchProcess:
                continue

    def alive(self) -> list[str]:
        """Processes seen earlier that still run (same pid and start time; zombies are dead)."""
        left = []
        for pid, started in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{pid} {' '.join(proc.cmdline())[:120]}")
            except psutil.NoSuchProcess:
                continue
        return left

    def kill_all(self) -> None:
        for pid, started in self.seen.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(pid)
                if proc.create_time() == started:
                    proc.kill()


def wait_for(
    what: str, check: Callable[[], Any], timeout: float, tracker: Tracker | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if tracker is not None:
            tracker.scan()
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def ready(url: str) -> bool:
    return httpx.get(f"{url}/api/v1/ready", timeout=2).status_code == 200


def submit_and_wait(
    url: str, key: str, body: dict[str, Any], timeout: float, tracker: Tracker
) -> dict[str, Any]:
    response = httpx.post(f"{url}/api/v1/jobs", json=body, headers={"X-API-Key": key}, timeout=10)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]

    def finished() -> dict[str, Any] | None:
        # Compose closes reads by default (TREEGRPO_READS_REQUIRE_KEY=true): reads carry the key.
        job = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers={"X-API-Key": key}, timeout=5).json()
        return job if job["status"] in ("succeeded", "failed", "cancelled", "lost") else None

    job: dict[str, Any] = wait_for(f"job {job_id} to finish", finished, timeout, tracker)
    return job


def interrupt(process: subprocess.Popen[Any], timeout: float = 60) -> None:
    """Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group."""
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=timeout)
