"""The interactive lane's warm process: one long-lived child that runs branch and sample jobs
one after another, so a branch pays neither the interpreter's start nor torch's import, and a
policy (a job's checkpoint) loaded for one branch serves the next ones from memory.

    python -m workers.warm --parent-pid P --idle-seconds S     (started by WarmRunner, never by hand)

Protocol: one JSON line per job on stdin, {"job_id", "attempt", "stop_file", "result_file",
"log_path"}; the job's output goes to its log (file descriptors 1 and 2 are pointed there for
the job's time) and its result to `result_file`, as `workers.runner` writes it. Loaded policies
and rewards are cached (workers.policy_cache) and dropped after `idle-seconds` unused; the
process exits when no job came for that long (the next job starts a new one). A stop request is
the job's stop file, or SIGTERM, as for the one-job runner.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from workers import policy_cache
from workers.context import StopRequest
from workers.runner import _watch_parent, failure, run, write_result

if TYPE_CHECKING:
    from workers.context import JobContext


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Point this process's stdout and stderr (the file descriptors) at `path` for a while."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (target, *saved):
            os.close(fd)


def run_one(request: dict[str, Any], current: dict[str, StopRequest]) -> None:
    from workers.context import LostOwnership

    stop = StopRequest(Path(request["stop_file"]))
    current["stop"] = stop
    running: dict[str, JobContext] = {}
    outcome, error = "failed", None
    with output_to(Path(request["log_path"])):
        try:
            outcome = run(int(request["job_id"]), int(request["attempt"]), stop, running)
            if outcome.startswith("launch:"):
                raise RuntimeError("multi-process jobs do not run in the warm process")
        except LostOwnership as exc:
            outcome = "lost"
            print(f"stopping: {exc}", file=sys.stderr, flush=True)
        except BaseException as exc:  # every failure must reach the job row
            error = failure(exc, running, Path(request["result_file"]))
        finally:
            current.pop("stop", None)
    write_result(Path(request["result_file"]), outcome, error)


def preload() -> None:
    """Import now, while no job waits, what every job needs: torch, the workers' job code and
    the model libraries (diffusers and transformers import lazily, on the first model built,
    which on a busy CPU took most of a branch's 15 s). Building the shipped digits model once
    does that; it is small, and dropped at once."""
    import torch  # noqa: F401

    import workers.kinds  # noqa: F401

    try:
        from treegrpo.models.registry import load_model

        load_model("digits", "cpu", "float32")
    except Exception as exc:  # only a warm-up: the job loads what it needs itself
        print(f"warm-up model load failed: {exc}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.warm")
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--idle-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    current: dict[str, StopRequest] = {}

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop = current.get("stop")
        if stop is None:
            os._exit(0)  # idle: nothing to checkpoint
        stop.signalled.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_signal)
    if args.parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(args.parent_pid,), daemon=True).start()
    policy_cache.enable(args.idle_seconds)
    preload()

    while True:
        ready, _, _ = select.select([sys.stdin], [], [], max(1.0, args.idle_seconds))
        if not ready:
            return 0  # idle for long enough: give the memory back
        line = sys.stdin.readline()
        if not line:
            return 0  # the worker closed the pipe
        run_one(json.loads(line), current)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
