"""A private studio stack for worker tests: database, broker, artifact store and real workers.

Two transports, as deployed:
- "filesystem": SQLite (migrated by Alembic) and kombu's filesystem transport in a temp folder;
- "redis": a fresh PostgreSQL database (created and dropped here) and Redis on 127.0.0.1:6379,
  on a database number and a queue name of this stack's own, so parallel runs never meet.

Workers are real `treegrpo worker` processes, each in its own process group (so a test can
SIGKILL a worker with its job's child process, as a crashed container would lose them).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from celery import Celery

from backend import crud
from backend.db import engine_for, session_scope
from backend.migrate import upgrade
from backend.queue import celery_config, task_name
from backend.settings import Settings
from backend.storage import log_relpath
from treegrpo.config import resolve_config

T = TypeVar("T")

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_DB = int(os.environ.get("TREEGRPO_TEST_WORKER_REDIS_DB", "12"))
# Fast clocks for tests: heartbeats every 0.3 s, a job is lost after 4 s without one, and a
# duplicate message waits 4 s (the lease) while the job it names runs.
FAST = {
    "heartbeat_seconds": 0.3,
    "stale_after_seconds": 4.0,
    "lease_seconds": 4.0,
    "cancel_grace_seconds": 8.0,
}
FINAL = ("succeeded", "failed", "cancelled")

# The shipped digits model, kept small: 2 prompts per epoch, trees of k=2, d=2 over 4 steps.
DIGITS_SMALL: dict[str, Any] = {
    "device": "cpu",
    "epochs": 3,
    "prompts_per_epoch": 2,
    "tree.k": 2,
    "tree.depth": 2,
    "sampling.steps": 4,
    "log_tree_every": 1,
    "sample_every": 1,
    "checkpoint_every": 1,
    "eval_prompts": ["a picture of the digit three", "a picture of the digit seven"],
}
# The random-init test model: loads in a second, for the fault tests.
TINY: dict[str, Any] = {
    "device": "cpu",
    "prompts_per_epoch": 2,
    "sampling.steps": 4,
    "checkpoint_every": 1,
    "log_tree_every": 0,
    "sample_every": 0,
}


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, explain: Callable[[], str]
) -> T:
    """Poll `probe` until it returns something truthy; on timeout fail with `explain()`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{explain()}")
        time.sleep(0.1)


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    output: Path

    def kill(self) -> None:
        """SIGKILL the worker's whole process group: the worker and its job's child process."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL whatever is left."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""


@dataclass
class Stack:
    transport: str
    root: Path
    settings: Settings
    env: dict[str, str]
    queue: str
    workers: list[WorkerProcess] = field(default_factory=list)
    # The queues workers consume, when not only `queue` (comma-separated, as --queues takes).
    consume: str | None = None

    @property
    def url(self) -> str:
        return self.settings.resolved_database_url

    @property
    def store(self) -> Path:
        return self.settings.resolved_artifact_dir

    # -- workers -------------------------------------------------------------------------------

    def start_worker(
        self, name: str = "w", env: dict[str, str] | None = None, queues: str | None = None
    ) -> WorkerProcess:
        """A `treegrpo worker` process; `env` adds to (or replaces) the stack's variables;
        `queues` replaces the queues it consumes."""
        output = self.root / f"worker-{name}-{len(self.workers)}.out"
        command = [
            sys.executable,
            "-m",
            "treegrpo.cli",
            "worker",
            "--queues",
            queues or self.consume or self.queue,
            "--loglevel",
            "info",
            "--hostname",
            f"{name}{len(self.workers)}@{self.transport}",
        ]
        with output.open("wb") as handle:
            process = subprocess.Popen(
                command,
                cwd=self.root,
                env={**self.env, **(env or {})},
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = WorkerProcess(name, process, output)
        self.workers.append(worker)
        return worker

    def stop_workers(self) -> None:
        """Kill the workers a test started (idle by then: nothing to checkpoint). A warm
        shutdown of an idle worker on the filesystem transport takes seconds of polling."""
        for worker in self.workers:
            worker.kill()
        self.workers.clear()

    # -- jobs ----------------------------------------------------------------------------------

    def create_job(
        self,
        kind: str = "train",
        preset: str = "digits-treegrpo",
        overrides: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        name: str = "test",
    ) -> int:
        config = resolve_config(preset, overrides=overrides or {})
        with session_scope(self.url) as session:
            job, _ = crud.create_job(
                session,
                kind=kind,
                name=name,
                config=config.to_dict(),
                algorithm=config.algorithm,
                preset=preset,
                params=params or {},
                progress_total=config.epochs if kind == "train" else 0,
            )
            return job.id

    def send(
        self,
        job_id: int,
        kind: str = "train",
        params: dict[str, Any] | None = None,
        queue: str | None = None,
    ) -> None:
        """What the API does after committing the row: a message with the job id (on the
        stack's private queue unless `queue` names another)."""
        sender = Celery("worker-tests", set_as_current=False)
        sender.conf.update(celery_config(self.settings))
        with sender.connection_for_write() as connection:
            sender.send_task(
                task_name(kind, params or {}),
                args=[job_id],
                queue=queue or self.queue,
                connection=connection,
            )

    def submit(self, kind: str = "train", **kwargs: Any) -> int:
        job_id = self.create_job(kind, **kwargs)
        self.send(job_id, kind, kwargs.get("params"))
        return job_id

    def job(self, job_id: int) -> dict[str, Any]:
        with session_scope(self.url) as session:
            job = crud.get_job(session, job_id=job_id)
            return {
                column: getattr(job, column)
                for column in (
                    "id",
                    "status",
                    "attempt",
                    "progress_step",
                    "progress_total",
                    "error",
                    "checkpoint_path",
                    "worker",
                    "started_at",
                    "finished_at",
                )
            }

    def log(self, job_id: int) -> str:
        path = self.store / log_relpath(job_id)
        return path.read_text(errors="replace") if path.exists() else ""

    def explain(self, job_id: int) -> Callable[[], str]:
        def text() -> str:
            workers = "\n".join(f"--- {w.output.name}\n{w.text()[-3000:]}" for w in self.workers)
            return (
                f"job: {json.dumps(self.job(job_id), default=str)}\n--- job log\n"
                f"{self.log(job_id)[-4000:]}\n{workers}"
            )

        return text

    def wait_status(
        self, job_id: int, statuses: tuple[str, ...], timeout: float = 90
    ) -> dict[str, Any]:
        return wait_until(
            lambda: (job := self.job(job_id))["status"] in statuses and job,
            timeout,
            f"job {job_id} to be {' or '.join(statuses)}",
            self.explain(job_id),
        )

    def wait_for(
        self, job_id: int, probe: Callable[[dict[str, Any]], bool], what: str, timeout: float = 90
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            job = self.job(job_id)
            if job["status"] in FINAL and not probe(job):
                raise AssertionError(f"job ended before {what}\n{self.explain(job_id)()}")
            return job if probe(job) else None

        return wait_until(check, timeout, what, self.explain(job_id))

    def metric_points(self, job_id: int) -> list[tuple[int, str, float]]:
        with session_scope(self.url) as session:
            return [(m.step, m.name, m.value) for m in crud.list_metrics(session, job_id=job_id)]


# ---------------------------------------------------------------------------------------------
# Making and removing stacks


def _env(settings: dict[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TREEGRPO_")}
    env.update(settings)
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@contextlib.contextmanager
def make_stack(transport: str, root: Path, **overrides: Any) -> Iterator[Stack]:
    """A stack on `transport`; `overrides` replace settings (FAST's clocks, broker_url, ...)."""
    tag = uuid.uuid4().hex[:10]
    data_dir = root / "data"
    # The operator's lists (issue 23), open to what worker tests use: servers on loopback at
    # free ports, models in pytest's temp folders. tests/security narrows them.
    limits = {"outbound_hosts": "127.0.0.1:*,localhost:*", "model_roots": str(root.parent)}
    clocks = {**FAST, **limits, **overrides}
    values: dict[str, Any] = {"data_dir": data_dir, **clocks}
    database: str | None = None
    if transport == "redis":
        database = f"treegrpo_w_{tag}"
        values["database_url"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
        values.setdefault("broker_url", f"redis://127.0.0.1:6379/{REDIS_DB}")
        _create_database(database)
    else:
        values["database_url"] = f"sqlite:///{data_dir / 'treegrpo.db'}"
    settings = Settings(**values)
    data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    env = _env(
        {
            "TREEGRPO_DATA_DIR": str(data_dir),
            "TREEGRPO_DATABASE_URL": settings.resolved_database_url,
            "TREEGRPO_BROKER_URL": settings.broker_url,
            **{f"TREEGRPO_{key.upper()}": str(value) for key, value in clocks.items()},
        }
    )
    stack = Stack(transport, root, settings, env, queue=f"treegrpo-test-{tag}")
    try:
        yield stack
    finally:
        stack.stop_workers()
        engine_for(settings.resolved_database_url).dispose()
        if transport == "redis":
            _forget_queue(stack.queue, str(values["broker_url"]))
        if database is not None:
            _drop_database(database)


def _create_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]


def _drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def _forget_queue(queue: str, broker_url: str) -> None:
    """Delete this stack's keys from the shared Redis database (never anyone else's)."""
    import redis

    client = redis.Redis.from_url(broker_url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError:
        return  # a private server that is gone already took its keys with it
    for key in client.scan_iter(match=f"*{queue}*"):
        client.delete(key)
    # Messages a SIGKILLed worker never acknowledged wait in the shared `unacked` hash.
    for tag, payload in client.hgetall("unacked").items():
        if queue.encode() in payload:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
