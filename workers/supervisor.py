"""What a worker task does with a job id: claim the row, run the job in a child process, watch
it, and write the final state. The Celery process itself never imports torch or touches CUDA.

    claim (queued -> running, attempt N)     a message for a job that is not queued does nothing
    start `python -m workers.runner`         its output goes to the job's log in the artifact store
    every tick (<= 1 s):                      read the status; heartbeat every heartbeat_seconds
        cancelling -> touch the stop file    the trainer checkpoints and stops between steps
        worker shutting down -> same         the job ends `interrupted` and is queued again
        after cancel_grace_seconds -> SIGKILL
        attempt no longer ours -> SIGKILL    the reconciler gave the job to another worker
    child exits -> succeeded | failed (with the error) | cancelled | interrupted
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy.exc import OperationalError

from backend import crud
from backend.db import session_scope
from backend.errors import NotFound
from backend.models import JobStatus
from backend.settings import Settings
from backend.storage import log_relpath
from workers.failures import take_traceback
from workers.joblog import JobLog
from workers.mirror import Mirror

logger = logging.getLogger(__name__)

# Set when the worker begins a warm shutdown (SIGTERM / first Ctrl-C): running jobs checkpoint,
# end `interrupted` and are queued again for the next worker.
SHUTTING_DOWN = threading.Event()

MAX_TICK_SECONDS = 1.0
FINISH_RETRY_PAUSES = (1.0, 2.0, 4.0, 8.0, 0.0)
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "PYTHONUNBUFFERED": "1",
}

Requeue = Callable[[int, str, dict[str, Any]], None]


@dataclass
class Claimed:
    job_id: int
    attempt: int
    kind: str
    params: dict[str, Any]
    # Machines the attempt spans (a train job's `nodes`); > 1 forms a gang (workers/gang.py).
    nodes: int = 1


def claim(settings: Settings, job_id: int, worker: str) -> Claimed | None:
    """queued -> running for `worker`, or a takeover of a running job whose lease expired (its
    worker died; the job has a checkpoint to resume from). None when the job is missing,
    finished, or held by a live worker."""
    with session_scope(settings.resolved_database_url) as session:
        job = crud.claim_job(
            session,
            job_id=job_id,
            worker=worker,
            lease_expired_before=crud.stale_cutoff(settings.lease_seconds),
        )
        if job is None:
            return None
        nodes = int(job.config.get("nodes", 1)) if job.kind == "train" else 1
        return Claimed(job.id, job.attempt, job.kind, dict(job.params or {}), nodes)


def held_elsewhere(settings: Settings, job_id: int) -> bool:
    """Whether another worker holds the job's lease now (a fresh heartbeat)."""
    with session_scope(settings.resolved_database_url) as session:
        return crud.lease_held(
            session, job_id=job_id, lease_expired_before=crud.stale_cutoff(settings.lease_seconds)
        )


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the out-of-memory killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


def _wait_result(child: subprocess.Popen[bytes], result_file: Path, seconds: float) -> int | None:
    """Up to `seconds` for the warm process to write the job's result (0: completed, 1:
    anything else) or to exit (its code); None when neither happened."""
    deadline = time.monotonic() + seconds
    while True:
        if result_file.exists():
            try:
                outcome = json.loads(result_file.read_text()).get("outcome")
            except (OSError, ValueError):
                outcome = None
            return 0 if outcome == "completed" else 1
        code = child.poll()
        if code is not None:
            return code
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def child_env(settings: Settings, gpu: str | None) -> dict[str, str]:
    """The worker's environment, with the settings the child must share made explicit."""
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env["TREEGRPO_DATABASE_URL"] = settings.resolved_database_url
    env["TREEGRPO_ARTIFACT_DIR"] = str(settings.resolved_artifact_dir)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


class WarmRunner:
    """The interactive lane's warm process (workers/warm.py), one per worker process, serving
    one job at a time: branch and sample jobs skip the interpreter's start and torch's import,
    and reuse the policies it keeps (evicted after settings.interactive_cache_seconds idle, when
    the process also exits). A job that finds it busy runs in a fresh process as usual."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, settings: Settings, gpu: str | None = None) -> subprocess.Popen[bytes]:
        """The live warm process, started if there is none (call with `lock` held, or at
        worker start)."""
        if self.process is not None and self.process.poll() is None:
            return self.process
        command = [
            sys.executable,
            "-m",
            "workers.warm",
            "--parent-pid",
            str(os.getpid()),
            "--idle-seconds",
            str(settings.interactive_cache_seconds),
        ]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=child_env(settings, gpu),
        )
        return self.process

    def prestart(self, settings: Settings) -> None:
        """Start it ahead of the first job (an interactive worker, at its start)."""
        if settings.interactive_cache_seconds > 0:
            with self.lock:
                self.start(settings)

    def send(self, process: subprocess.Popen[bytes], request: dict[str, Any]) -> bool:
        assert process.stdin is not None
        try:
            process.stdin.write((json.dumps(request) + "\n").encode())
            process.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True


WARM = WarmRunner()
# Jobs of these kinds (the interactive lane: branch and sample) may run in the warm process.
WARM_KINDS = frozenset({"sample"})


class Supervisor:
    """One claimed attempt of one job, from the child's start to the job's final state."""

    def __init__(
        self,
        settings: Settings,
        job: Claimed,
        worker: str,
        requeue: Requeue,
        gpu: str | None = None,
    ) -> None:
        self.settings = settings
        self.job = job
        self.worker = worker
        self.requeue = requeue
        self.gpu = gpu
        self.url = settings.resolved_database_url
        self.store = settings.resolved_artifact_dir
        self.log_key = log_relpath(job.job_id)
        self.log = JobLog(self.store / self.log_key, "worker")
        self.mirror = Mirror.of(settings)
        self.stop_reason: str | None = None  # cancel | shutdown | lost
        self.stop_since = 0.0
        self.killed = False
        self.db_down = False

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> str:
        """Returns the job's final status, or 'lost' when another attempt owns it now."""
        try:
            # With a bucket, the log continues the one an earlier attempt left there.
            self.mirror.fetch_log(self.log_key)
        except Exception as exc:
            self.log.write(f"could not read the job's log from the artifact store: {exc}")
        try:
            return self._run()
        finally:
            self.publish_log()

    def publish_log(self) -> None:
        try:
            self.mirror.publish(self.log_key)
        except Exception as exc:  # the store blinked: the next heartbeat tries again
            logger.warning("job %s: could not upload the log: %s", self.job.job_id, exc)

    def _run(self) -> str:
        job = self.job
        self.log.write(f"attempt {job.attempt} claimed by {self.worker}")
        with tempfile.TemporaryDirectory(prefix=f"treegrpo-job{job.job_id}-") as scratch:
            stop_file = Path(scratch) / "STOP"
            result_file = Path(scratch) / "result.json"
            if self.warm_allowed() and WARM.lock.acquire(blocking=False):
                try:
                    warm = self.run_warm(stop_file, result_file)
                finally:
                    WARM.lock.release()
                if warm is not None:
                    return warm
            command = self.runner_command(stop_file, result_file)
            try:
                with self.log.path.open("ab") as output:
                    child = subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        env=child_env(self.settings, self.gpu),
                    )
            except OSError as exc:
                return self.finish("failed", f"could not start the job's process: {exc}")
            code = self.watch(child, stop_file)
            result = self.read_result(result_file)
            self.log_traceback(result_file)
        return self.conclude(code, result)

    def runner_command(self, stop_file: Path, result_file: Path) -> list[str]:
        """`python -m workers.runner` for this attempt (a gang's node adds its rendezvous)."""
        job = self.job
        return [
            sys.executable,
            "-m",
            "workers.runner",
            "--job-id",
            str(job.job_id),
            "--attempt",
            str(job.attempt),
            "--stop-file",
            str(stop_file),
            "--result-file",
            str(result_file),
            "--parent-pid",
            str(os.getpid()),
        ]

    def warm_allowed(self) -> bool:
        job = self.job
        return (
            job.kind in WARM_KINDS
            and self.settings.interactive_cache_seconds > 0
            and self.gpu is None  # a job given a GPU of its own runs in its own process
        )

    def run_warm(self, stop_file: Path, result_file: Path) -> str | None:
        """The job in the warm process; None when that process cannot take it (then the caller
        starts a fresh one)."""
        job = self.job
        try:
            process = WARM.start(self.settings)
        except OSError:
            return None
        request = {
            "job_id": job.job_id,
            "attempt": job.attempt,
            "stop_file": str(stop_file),
            "result_file": str(result_file),
            "log_path": str(self.log.path),
        }
        if not WARM.send(process, request):
            WARM.process = None
            return None
        self.log.write("running in the interactive lane's warm process")
        code = self.watch(process, stop_file, result_file)
        result = self.read_result(result_file)
        self.log_traceback(result_file)
        return self.conclude(code, result)

    def watch(
        self, child: subprocess.Popen[bytes], stop_file: Path, result_file: Path | None = None
    ) -> int:
        """Wait for the child while heartbeating, relaying stop requests; returns its exit code.
        With `result_file` (the warm process, which outlives the job), the job is over when
        its result is written: 0 for a completed job, else 1."""
        beat = self.settings.heartbeat_seconds
        tick = min(MAX_TICK_SECONDS, beat)
        next_beat = time.monotonic() + beat
        while True:
            if result_file is None:
                try:
                    return child.wait(timeout=tick)
                except subprocess.TimeoutExpired:
                    pass
            else:
                code = _wait_result(child, result_file, tick)
                if code is not None:
                    return code
            now = time.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + beat
                    status = self.heartbeat()
                    self.publish_log()
                else:
                    status = self.status()
            except NotFound:
                status = None  # the row is gone: nothing to run for
            except Exception as exc:  # the database blinked: keep the job running, try again
                if not self.db_down:
                    self.log.write(f"cannot reach the database ({type(exc).__name__}: {exc})")
                self.db_down = True
                status = JobStatus.running.value
            else:
                if self.db_down:
                    self.log.write("the database answers again")
                self.db_down = False
            if status is None and self.stop_reason != "lost":
                self.stop_reason, self.stop_since = "lost", now
                self.log.write(
                    f"attempt {self.job.attempt} no longer owns the job (declared lost and "
                    "taken over); stopping this attempt's process"
                )
                self.kill(child)
            elif status == JobStatus.cancelling.value and self.stop_reason is None:
                self.request_stop(stop_file, "cancel", now)
                self.log.write(
                    "cancel requested: the trainer checkpoints and stops after its current step "
                    f"(forced stop in {self.settings.cancel_grace_seconds:g} s)"
                )
            if SHUTTING_DOWN.is_set() and self.stop_reason is None:
                self.request_stop(stop_file, "shutdown", now)
                self.log.write("the worker is shutting down: checkpointing and stopping the job")
            grace = self.settings.cancel_grace_seconds
            if self.stop_reason and not self.killed and now - self.stop_since > grace:
                self.log.write(f"the job's process did not stop within {grace:g} s; killing it")
                self.kill(child)

    def request_stop(self, stop_file: Path, reason: str, now: float) -> None:
        stop_file.touch()
        self.stop_reason, self.stop_since = reason, now

    def kill(self, child: subprocess.Popen[bytes]) -> None:
        """SIGKILL the child and everything it started (the ranks of a multi-process job)."""
        self.killed = True
        try:
            descendants = psutil.Process(child.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        for process in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()

    def heartbeat(self) -> str | None:
        with session_scope(self.url) as session:
            return crud.heartbeat(session, job_id=self.job.job_id, attempt=self.job.attempt)

    def status(self) -> str | None:
        """The job's status, or None when this attempt no longer owns it."""
        with session_scope(self.url) as session:
            job = crud.get_job(session, job_id=self.job.job_id)
            if job.attempt != self.job.attempt or job.status not in (
                JobStatus.running.value,
                JobStatus.cancelling.value,
            ):
                return None
            return job.status

    def log_traceback(self, result_file: Path) -> None:
        """A failed job's traceback into the worker's own log: its job log and error, which
        the API serves, carry one line (workers/failures.py)."""
        text = take_traceback(result_file)
        if text:
            logger.error(
                "job %s attempt %s failed:\n%s", self.job.job_id, self.job.attempt, text.rstrip()
            )

    @staticmethod
    def read_result(path: Path) -> dict[str, str | None] | None:
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return document if isinstance(document, dict) else None

    # -- the end -------------------------------------------------------------------------------

    def conclude(self, code: int, result: dict[str, str | None] | None) -> str:
        outcome = result.get("outcome") if result else None
        error = result.get("error") if result else None
        reason = self.stop_reason
        if reason is None and SHUTTING_DOWN.is_set():
            # The shutdown's SIGTERM reached the child's process group before the next tick.
            reason = "shutdown"
        if reason == "lost" or outcome == "lost":
            self.log.write(f"attempt {self.job.attempt} ended without touching the job's state")
            return "lost"
        if outcome == "completed":
            return self.finish("succeeded")
        if outcome == "failed":
            return self.finish("failed", error or f"the job's process {describe_exit(code)}")
        if outcome == "stopped" or self.killed:
            if reason == "cancel":
                note = None
                if outcome != "stopped":
                    note = (
                        f"forced stop: the process did not stop within "
                        f"{self.settings.cancel_grace_seconds:g} s of the cancel; the last "
                        "checkpoint is kept"
                    )
                return self.finish("cancelled", note)
            status = self.finish("interrupted")
            if reason == "shutdown" and status == "interrupted" and self.queue_again():
                return "queued"
            return status
        last = self.log.last_line()
        detail = f"; last log line: {last}" if last else ""
        return self.finish("failed", f"the job's process {describe_exit(code)}{detail}")

    def finish(self, status: str, error: str | None = None) -> str:
        """Write the final state (retrying a few times through a database blink; if it stays
        down, the heartbeat goes stale and the reconciler takes over)."""
        for attempt, pause in enumerate(FINISH_RETRY_PAUSES):
            try:
                with session_scope(self.url) as session:
                    changed = crud.finish_job(
                        session,
                        job_id=self.job.job_id,
                        attempt=self.job.attempt,
                        status=status,
                        error=error,
                    )
                break
            except OperationalError:
                if attempt == len(FINISH_RETRY_PAUSES) - 1:
                    raise
                time.sleep(pause)
        if not changed:
            self.log.write(f"attempt {self.job.attempt} no longer owns the job; left it as it is")
            return "lost"
        self.log.write(f"job {status}" + (f": {error}" if error else ""))
        return status

    def queue_again(self) -> bool:
        """interrupted -> queued, and a message for the next worker. Returns whether it is."""
        from workers.reconcile import queue_again

        job = self.job
        problem = queue_again(
            self.settings, job.job_id, job.kind, job.params, "interrupted", self.requeue
        )
        self.log.write(problem or "queued again; the next worker resumes it from its checkpoint")
        return problem is None
