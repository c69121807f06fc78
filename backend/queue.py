"""The queue service: sends a job id to the workers by task name, after the row is committed.

The API never imports the workers' code; it only knows the task names below. Broker options live
here so the sender and the workers' Celery app (workers/app.py) use the same transport.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery

from backend.settings import Settings, get_settings

TASK_TRAIN = "treegrpo.train"
TASK_SAMPLE = "treegrpo.sample"
TASK_EVALUATE = "treegrpo.evaluate"
TASK_BRANCH = "treegrpo.branch"
TASK_RECONCILE = "treegrpo.reconcile"
TASK_PURGE = "treegrpo.purge"
# A worker joins a multi-node job's gang as one of its machines (workers/gang.py); sent by the
# job's node 0, on the training lane.
TASK_JOIN = "treegrpo.join"
# Two lanes: training (train, evaluate: may run for days) and interactive (sample and branch
# jobs, artifact purges: seconds), each served by its own worker, so interactive work never
# waits behind training (crud.lane_of says which lane a job kind takes).
QUEUE = "treegrpo"
INTERACTIVE_QUEUE = "treegrpo-interactive"
QUEUES = {"training": QUEUE, "interactive": INTERACTIVE_QUEUE}


def queue_of(kind: str) -> str:
    from backend.crud.jobs import lane_of

    return QUEUES[lane_of(kind)]


def task_name(kind: str, params: dict[str, Any]) -> str:
    if kind == "train":
        return TASK_TRAIN
    if kind == "evaluate":
        return TASK_EVALUATE
    if kind == "sample":
        return TASK_BRANCH if params.get("branch") else TASK_SAMPLE
    raise ValueError(f"unknown job kind {kind!r}")


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings shared by the sender and the workers."""
    url = settings.resolved_broker_url
    config: dict[str, Any] = {
        "broker_url": url,
        "task_default_queue": QUEUE,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": _redis_options(settings),
    }
    if url.startswith("filesystem://"):
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        # kombu's filesystem transport with atomic message files (backend/fs_transport.py).
        config["broker_transport"] = "backend.fs_transport:Transport"
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # kombu's default is ./control, relative to whatever folder the process runs in.
            "control_folder": str(folder / "control"),
            "store_processed": False,
            # kombu polls the folder; its 1 s default makes every job wait a second.
            "polling_interval": 0.05,
        }
    return config


def _redis_options(settings: Settings) -> dict[str, Any]:
    if settings.broker_visibility_timeout is None:
        # A job can run for days; a shorter visibility timeout would redeliver it mid-run (the
        # database lease would hold the copy back, but there is no need for the traffic).
        return {"visibility_timeout": settings.max_job_seconds + 3600}
    timeout = settings.broker_visibility_timeout
    return {
        "visibility_timeout": timeout,
        # kombu looks for expired messages every interval x throttle seconds (100 s by
        # default); a short timeout wants them found about as fast.
        "unacked_restore_interval": max(1.0, timeout / 2),
        "unacked_restore_throttle": 1,
    }


_senders: dict[tuple[str, str, int], Celery] = {}
_senders_lock = threading.Lock()


def _sender(settings: Settings) -> Celery:
    """One sending Celery app per broker (URL, filesystem folder, timeout), made on first use."""
    key = (
        settings.resolved_broker_url,
        str(settings.broker_folder),
        settings.max_job_seconds,
    )
    with _senders_lock:
        app = _senders.get(key)
        if app is None:
            # set_as_current=False: the API's sender must not become the process's default app
            # (a worker process may hold its own).
            app = Celery("treegrpo-api", set_as_current=False)
            app.conf.update(celery_config(settings))
            _senders[key] = app
        return app


def enqueue(
    job_id: int, kind: str, params: dict[str, Any], *, settings: Settings | None = None
) -> None:
    """Send the job to the workers. Raises if the broker cannot be reached."""
    sender = _sender(settings or get_settings())
    sender.send_task(
        task_name(kind, params),
        args=[job_id],
        queue=queue_of(kind),
        # Fail within seconds when the broker is down instead of retrying for minutes; the
        # caller marks the row (the row is the truth, the message only dispatches).
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
    )


def enqueue_purge(job_id: int, *, settings: Settings | None = None) -> None:
    """Ask a worker to remove a deleted job's artifacts. Raises if the broker is unreachable."""
    sender = _sender(settings or get_settings())
    sender.send_task(
        TASK_PURGE,
        args=[job_id],
        queue=INTERACTIVE_QUEUE,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
    )


def ping_broker(*, settings: Settings | None = None) -> None:
    """Raises if the broker cannot be reached (readiness)."""
    sender = _sender(settings or get_settings())
    with sender.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)
