"""The tasks: thin, named as in backend/queue.py, safe to run twice.

Each job task takes a job id, claims the row (queued -> running) and supervises the job's child
process until the job's final state is written. A message for a job that is not queued (a
duplicate, a redelivery after a crash, a job cancelled while queued) does nothing. Train, sample,
evaluate and branch share one body: the row's kind and params say what to run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from celery import Task
from celery.exceptions import Reject
from sqlalchemy.exc import OperationalError

from backend.queue import (
    TASK_BRANCH,
    TASK_EVALUATE,
    TASK_JOIN,
    TASK_PURGE,
    TASK_RECONCILE,
    TASK_SAMPLE,
    TASK_TRAIN,
)
from workers.purge import purge_job
from workers.reconcile import reconcile
from workers.supervisor import SHUTTING_DOWN, Supervisor, claim, held_elsewhere

if TYPE_CHECKING:
    from workers.app import WorkerApp

logger = logging.getLogger(__name__)

JOB_TASKS = (TASK_TRAIN, TASK_SAMPLE, TASK_EVALUATE, TASK_BRANCH)
# A claim that cannot reach the database is retried (the message must not be lost).
CLAIM_RETRY_MAX_SECONDS = 60
REJECT_PAUSE_SECONDS = 0.5


class DeviceSlots:
    """With --concurrency N and CUDA_VISIBLE_DEVICES naming at least N GPUs, each running job's
    process sees one GPU of its own; otherwise jobs see what the worker sees."""

    def __init__(self, concurrency: int, visible: str | None) -> None:
        devices = [d.strip() for d in (visible or "").split(",") if d.strip()]
        self.devices = devices if concurrency > 1 and len(devices) >= concurrency else []
        self.free: queue.Queue[str] = queue.Queue()
        for device in self.devices[:concurrency]:
            self.free.put(device)

    @contextlib.contextmanager
    def take(self) -> Iterator[str | None]:
        if not self.devices:
            yield None
            return
        device = self.free.get()
        try:
            yield device
        finally:
            self.free.put(device)


_slots: dict[int, DeviceSlots] = {}
_slots_lock = threading.Lock()


def slots_of(app: WorkerApp) -> DeviceSlots:
    with _slots_lock:
        if id(app) not in _slots:
            concurrency = int(app.conf.worker_concurrency or 1)
            _slots[id(app)] = DeviceSlots(concurrency, os.environ.get("CUDA_VISIBLE_DEVICES"))
        return _slots[id(app)]


def run_job_message(app: WorkerApp, task: Task, job_id: int) -> str:
    from workers.app import sender

    settings = app.settings
    if SHUTTING_DOWN.is_set():
        # A worker that is shutting down takes no new job: the message goes back to the queue
        # for the next worker (the pause keeps a last poll from spinning on it).
        time.sleep(REJECT_PAUSE_SECONDS)
        raise Reject(f"job {job_id}: this worker is shutting down", requeue=True)
    hostname = task.request.hostname or socket.gethostname()
    worker = f"{hostname}/pid-{os.getpid()}"
    try:
        claimed = claim(settings, job_id, worker)
    except OperationalError as exc:
        retries = task.request.retries or 0
        countdown = min(CLAIM_RETRY_MAX_SECONDS, 2**retries)
        logger.warning(
            "job %s: database unreachable (%s); retrying in %s s", job_id, exc, countdown
        )
        raise task.retry(countdown=countdown, exc=exc) from exc
    if claimed is None:
        if held_elsewhere(settings, job_id):
            # A second copy of the message (Redis redelivers an unacknowledged message after its
            # visibility timeout): the lease says its worker is alive, so this copy waits. If
            # that worker dies, the copy comes back after the lease and takes the job over.
            wait = max(1.0, settings.lease_seconds)
            logger.info(
                "job %s is held by a live worker: this message comes back in %.0f s", job_id, wait
            )
            raise task.retry(countdown=wait)
        logger.info("job %s is not queued (running, finished or unknown): message ignored", job_id)
        return "ignored"
    logger.info("job %s (%s) claimed as attempt %s", job_id, claimed.kind, claimed.attempt)
    with slots_of(app).take() as device:
        if claimed.nodes > 1:
            from workers.gang import lead

            status = lead(settings, claimed, worker, sender(app), join_sender(app), device)
        else:
            status = Supervisor(settings, claimed, worker, sender(app), device).run()
    logger.info("job %s: %s", job_id, status)
    return status


def join_sender(app: WorkerApp) -> Callable[[int, int], None]:
    """Sends a join message for a multi-node attempt to the lane train jobs take."""
    from workers.app import requeue_target

    def join(job_id: int, attempt: int) -> None:
        app.send_task(
            TASK_JOIN,
            args=[job_id, attempt],
            queue=requeue_target(app, "train"),
            retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.5},
        )

    return join


def run_join_message(app: WorkerApp, task: Task, job_id: int, attempt: int) -> str:
    """Join a multi-node attempt as one of its machines (workers/gang.py)."""
    from workers.app import sender
    from workers.gang import follow

    if SHUTTING_DOWN.is_set():
        time.sleep(REJECT_PAUSE_SECONDS)
        raise Reject(f"job {job_id}: this worker is shutting down", requeue=True)
    hostname = task.request.hostname or socket.gethostname()
    worker = f"{hostname}/pid-{os.getpid()}"
    with slots_of(app).take() as device:
        status = follow(app.settings, job_id, attempt, worker, sender(app), device)
    logger.info("job %s attempt %s, as a joining node: %s", job_id, attempt, status)
    return status


def register_tasks(app: WorkerApp) -> None:
    def run_job(task: Task, job_id: int) -> str:
        return run_job_message(app, task, int(job_id))

    for name in JOB_TASKS:
        # max_retries=None: a message that waits (a lease held elsewhere, a database that is
        # down) comes back as often as it takes; Celery's default gives up after 3.
        app.task(name=name, bind=True, ignore_result=True, max_retries=None)(run_job)

    def reconcile_now() -> list[tuple[int, str]]:
        from workers.app import sender

        return reconcile(app.settings, sender(app))

    app.task(name=TASK_RECONCILE, ignore_result=True)(reconcile_now)

    def join(task: Task, job_id: int, attempt: int) -> str:
        return run_join_message(app, task, int(job_id), int(attempt))

    app.task(name=TASK_JOIN, bind=True, ignore_result=True)(join)

    def purge(job_id: int) -> int:
        return purge_job(app.settings, int(job_id))

    app.task(name=TASK_PURGE, ignore_result=True)(purge)
