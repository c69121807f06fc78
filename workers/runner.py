"""The child process that runs one job attempt: `python -m workers.runner --job-id N --attempt A`.

Started by the worker's supervisor (workers/supervisor.py), never by hand. It reads the job row,
runs the kind's work (workers/kinds.py) with the core library, writes progress through short DB
sessions, and ends by writing a small JSON result for the supervisor:

    {"outcome": "completed" | "stopped" | "failed" | "lost", "error": str | null}

A train job with `gpus = N > 1` starts N ranks of this same command under the core's launcher
(treegrpo/distributed.py); every rank trains its share, rank 0 alone writes. A job on several
machines (`nodes > 1`) gets the gang's rendezvous from its supervisor (workers/gang.py): each
machine runs one torchrun agent over its `gpus` ranks, and each machine's local rank 0 writes
that machine's result file.

Stop requests: the supervisor's stop file, or SIGTERM / SIGINT (a deployment stopping the whole
process group); the trainer then stops after its current step and checkpoints. If the worker
process dies, this process notices its parent is gone and exits at once, so no orphan keeps
writing for a job that is about to be taken over.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from workers.context import StopRequest
from workers.failures import describe, save_traceback, sent_strings

if TYPE_CHECKING:
    from treegrpo.distributed import Rendezvous
    from workers.context import JobContext

ORPHAN_CHECK_SECONDS = 1.0
EXIT_ORPHANED = 70

__all__ = ["describe", "failure", "main", "run", "write_result"]


def failure(exc: BaseException, running: dict[str, JobContext], result_file: Path | None) -> str:
    """The job row's one-line error for `exc` (workers/failures.py); its traceback goes to the
    worker's own log, never to the job's."""
    save_traceback(exc, result_file)
    ctx = running.get("job")
    sent = sent_strings([ctx.config.to_dict(), ctx.params]) if ctx is not None else frozenset()
    error = describe(exc, sent)
    where = _where(ctx)
    return f"{error} ({where})" if where else error


def write_result(path: Path, outcome: str, error: str | None) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"outcome": outcome, "error": error}))
    tmp.replace(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch_parent(worker_pid: int) -> None:
    """Exit at once when the worker that started us is gone (an orphan must not keep writing).
    A rank of a multi-process job is the launcher's child, so it watches the worker's pid."""
    direct = os.getppid() == worker_pid
    while True:
        time.sleep(ORPHAN_CHECK_SECONDS)
        if (os.getppid() != worker_pid) if direct else not _alive(worker_pid):
            print(f"worker process {worker_pid} is gone; exiting", file=sys.stderr, flush=True)
            os._exit(EXIT_ORPHANED)


def writes_result() -> bool:
    """Local rank 0 of this machine's ranks, or the only process of any other job: the result
    file is this machine's (on one machine, local rank 0 is rank 0)."""
    return os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")) == "0"


def relaunch(
    argv: Sequence[str], processes: int, cpu: bool, rendezvous: Rendezvous | None = None
) -> int:
    """This command again on `processes` ranks under the core's launcher (torch.distributed.run
    on the CPU, `accelerate launch` on GPUs; torchrun with `rendezvous` on several machines);
    waits for it, passing a SIGTERM on. Ctrl-C reaches the launcher directly (same process
    group)."""
    import subprocess

    from treegrpo.distributed import launch_command

    launcher = launch_command([], processes, cpu, rendezvous)
    if launcher[-2:] != ["-m", "treegrpo.cli"]:
        raise RuntimeError(f"unexpected launcher command {launcher}")
    child = subprocess.Popen([*launcher[:-2], "-m", "workers.runner", *argv])

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return child.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.runner")
    parser.add_argument("--job-id", type=int, required=True)
    parser.add_argument("--attempt", type=int, required=True)
    parser.add_argument("--stop-file", type=Path, required=True)
    parser.add_argument("--result-file", type=Path, required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    # A multi-node attempt: where the gang's torchrun agents meet (workers/gang.py).
    parser.add_argument("--rdzv-endpoint", default=None)
    parser.add_argument("--rdzv-id", default=None)
    parser.add_argument("--node-rank", type=int, default=0)
    parser.add_argument("--local-addr", default=None)
    parser.add_argument("--join-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    stop = StopRequest(args.stop_file)

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.signalled.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _on_signal)
    if args.parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(args.parent_pid,), daemon=True).start()

    from workers.context import LostOwnership

    running: dict[str, JobContext] = {}
    outcome, error = "failed", None
    try:
        outcome = run(args.job_id, args.attempt, stop, running)
        if outcome.startswith("launch:"):
            # A train job on several processes: the ranks run it, rank 0 writes the result.
            _, processes, nodes, device_type = outcome.split(":")
            argv = list(sys.argv[1:]) if argv is None else list(argv)
            rendezvous = _rendezvous(args, int(nodes))
            return relaunch(argv, int(processes), device_type == "cpu", rendezvous)
    except LostOwnership as exc:
        outcome = "lost"
        print(f"stopping: {exc}", file=sys.stderr, flush=True)
    except BaseException as exc:  # every failure must reach the job row
        error = failure(exc, running, args.result_file)
    if writes_result():
        write_result(args.result_file, outcome, error)
    return 0 if outcome == "completed" else 1


def run(job_id: int, attempt: int, stop: StopRequest, running: dict[str, JobContext]) -> str:
    """Read the job row, build its context (kept in `running` for error messages), run it."""
    from backend import crud
    from backend.db import session_scope
    from backend.settings import get_settings
    from backend.storage import log_relpath
    from treegrpo.config import RunConfig
    from workers.context import JobContext, LostOwnership
    from workers.job_limits import enforce as enforce_job_limits
    from workers.joblog import JobLog
    from workers.kinds import run_job
    from workers.mirror import Mirror

    settings = get_settings()
    store = settings.resolved_artifact_dir
    with session_scope() as session:
        job = crud.get_job(session, job_id=job_id)
        if job.attempt != attempt or job.status not in ("running", "cancelling"):
            raise LostOwnership(f"job {job_id} is {job.status} at attempt {job.attempt}")
        kind, params, raw_config = job.kind, dict(job.params or {}), dict(job.config)
        checkpoint_path = job.checkpoint_path
    ctx = JobContext(
        job_id=job_id,
        attempt=attempt,
        kind=kind,
        config=RunConfig.from_dict(raw_config),
        params=params,
        checkpoint_path=checkpoint_path,
        store=store,
        log=JobLog(store / log_relpath(job_id), "job"),
        stop=stop,
        mirror=Mirror.of(settings),
        latent_dtype=settings.latent_dtype,
        keep_tree_latents=settings.keep_tree_latents,
    )
    running["job"] = ctx
    enforce_job_limits(ctx.config)  # the operator's lists, before anything loads or connects
    if kind == "train" and ctx.config.world_size > 1 and "WORLD_SIZE" not in os.environ:
        from treegrpo.models.registry import resolve_device

        config = ctx.config
        return f"launch:{config.gpus}:{config.nodes}:{resolve_device(config.device).type}"
    return run_job(ctx)


def _rendezvous(args: argparse.Namespace, nodes: int) -> Rendezvous | None:
    """The gang's meeting point for torchrun; None on one machine. A multi-node job started
    without one (not through a gang) cannot find its other machines: that is an error."""
    from treegrpo.distributed import Rendezvous

    if nodes == 1:
        return None
    if not (args.rdzv_endpoint and args.rdzv_id):
        raise RuntimeError(
            f"nodes = {nodes}, but this attempt has no rendezvous: a multi-node job runs "
            "through the gang its workers form (workers/gang.py) or under torchrun"
        )
    return Rendezvous(
        nodes=nodes,
        endpoint=args.rdzv_endpoint,
        run_id=args.rdzv_id,
        host=args.node_rank == 0,
        local_addr=args.local_addr,
        join_timeout=args.join_timeout,
    )


def _where(ctx: JobContext | None) -> str:
    """'during epoch 3 of 5; the last checkpoint is epoch 2' for a train job, else ''."""
    if ctx is None or ctx.kind != "train" or "epoch" not in ctx.notes:
        return ""
    text = f"during epoch {ctx.notes['epoch']} of {ctx.config.epochs}"
    if "checkpoint_epoch" in ctx.notes:
        text += f"; the last checkpoint is epoch {ctx.notes['checkpoint_epoch']}"
    return text


if __name__ == "__main__":
    code = main()
    # Everything is committed and the result written: skip the interpreter's teardown (seconds
    # with torch loaded), so the worker learns the job's end at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
