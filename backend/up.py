"""`treegrpo up`: the embedded deployment in one command (ARCHITECTURE.md section 7).

Migrates a SQLite database under ./data, makes sure a local API key exists, starts the API (with
the dashboard at /ui) and two workers on kombu's filesystem transport as child processes (one
for training, one for the interactive lane: branches and samples never wait behind a run), waits
until the API is ready, prints the URL and the key, and on Ctrl-C (or SIGTERM) stops everything
it started, grandchildren included. A second `up` reuses ./data: earlier runs are still there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import httpx
import psutil

from backend.private_files import PRIVATE_DIR, make_private_dir
from backend.queue import INTERACTIVE_QUEUE, QUEUE

READY_TIMEOUT_S = 120.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def exposure_warning(host: str, port: int, reads_require_key: bool) -> str | None:
    """`up` binds loopback and leaves reads open; bound anywhere else with reads open, it warns."""
    if host in LOOPBACK or reads_require_key:
        return None
    return (
        f"up: WARNING: bound to {host}, not loopback, with reads open: anyone who can reach port "
        f"{port} can list every run and its config, read logs and images and download "
        "checkpoints. Set TREEGRPO_READS_REQUIRE_KEY=true (or bind 127.0.0.1)."
    )


STOP_GRACE_S = 20.0


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "treegrpo.cli", *args]


class Stack:
    """The child processes of `up`, each in its own session so one signal reaches a whole tree."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        print(f"up: starting {name}: {' '.join(args[2:])}", flush=True)
        child = subprocess.Popen(args, env=env, start_new_session=True)
        self.children.append(child)
        return child

    def processes(self) -> list[psutil.Process]:
        """Every live process of the stack: the children and all their descendants."""
        found: dict[int, psutil.Process] = {}
        for child in self.children:
            try:
                parent = psutil.Process(child.pid)
                found[parent.pid] = parent
                for sub in parent.children(recursive=True):
                    found[sub.pid] = sub
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM to each child's process group (the worker checkpoints its job), then SIGKILL
        to whatever is still alive after `grace` seconds."""
        everyone = self.processes()
        for child in self.children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(everyone, timeout=grace)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=5)
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)


def banner(url: str, key: str) -> str:
    """What `up` prints once the stack is ready (README.md's Quick start shows it; a test holds
    the two equal)."""
    return (
        "TreeGRPO studio is up.\n"
        f"  dashboard: {url}/ui\n"
        f"  API:       {url}/api/v1 (docs at {url}/docs)\n"
        f"  API key:   {key}\n"
        "Paste the key into the dashboard's key field; `treegrpo submit` finds it by itself.\n"
        "Press Ctrl-C to stop.\n"
    )


def wait_ready(url: str, children: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            if child.poll() is not None:
                raise RuntimeError(f"a service exited with code {child.returncode} during start")
        try:
            if httpx.get(f"{url}/api/v1/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API at {url} was not ready after {timeout:.0f} s")


def run_up(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    make_private_dir(data_dir)  # made before this rule, or by a looser umask
    env = dict(os.environ)
    env["TREEGRPO_DATA_DIR"] = str(data_dir)
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }.items():
        env.setdefault(key, value)
    os.environ.update({"TREEGRPO_DATA_DIR": str(data_dir)})

    from backend.bootstrap import ensure_local_key
    from backend.migrate import upgrade
    from backend.settings import load_settings

    settings = load_settings()
    print(f"up: data in {data_dir} (database {settings.resolved_database_url})", flush=True)
    upgrade(settings.resolved_database_url)
    key = ensure_local_key(settings)

    url = f"http://{args.host}:{args.port}"
    env["TREEGRPO_API_URL"] = url
    warning = exposure_warning(args.host, args.port, settings.reads_require_key)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    stack = Stack()
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        api = stack.start(
            "api",
            _command("serve", "--host", args.host, "--port", str(args.port), "--no-banner"),
            env,
        )
        worker = stack.start(
            "worker", _command("worker", "--concurrency", "1", "--queues", QUEUE), env
        )
        interactive = stack.start(
            "interactive worker",
            _command("worker", "--concurrency", "1", "--queues", INTERACTIVE_QUEUE),
            env,
        )
        wait_ready(url, [api, worker, interactive], args.ready_timeout)
        print("\n" + banner(url, key), flush=True)
        while not stopping:
            for child in (api, worker, interactive):
                if child.poll() is not None:
                    print(f"up: a service exited with code {child.returncode}", file=sys.stderr)
                    stopping = True
            time.sleep(0.2)
        return 0
    except RuntimeError as exc:
        print(f"up: {exc}", file=sys.stderr)
        return 1
    finally:
        print("up: stopping (running jobs checkpoint first)...", flush=True)
        stack.stop(args.stop_grace)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("up: stopped", flush=True)


def register_up(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run everything locally: API, dashboard and two CPU workers (no Docker)",
        description="The embedded deployment: a SQLite database and files under --data-dir, "
        "the API with the dashboard at /ui, and two workers on the filesystem transport (one "
        "trains, the other serves branches and samples at once), with the shipped digits "
        "model on the CPU. Ctrl-C stops it all.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("TREEGRPO_PORT", "8000")),
        help="default 8000 or $TREEGRPO_PORT",
    )
    parser.add_argument("--data-dir", default=os.environ.get("TREEGRPO_DATA_DIR", "data"))
    parser.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S)
    parser.add_argument("--stop-grace", type=float, default=STOP_GRACE_S)
    parser.set_defaults(func=run_up)
