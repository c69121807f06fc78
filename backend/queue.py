"""The queue service: sends a job id to the workers by task name, after the row is committed.

The API never imports the workers' code; it only knows the task names below. Broker options live
here so the sender and the workers' Celery app (workers/app.py) use the same transport.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery

from backend.settings import Settings, get_settings

TASK_TRAIN = "treegrpo.train"
TASK_SAMPLE = "treegrpo.sample"
TASK_EVALUATE = "treegrpo.evaluate"
TASK_BRANCH = "treegrpo.branch"
TASK_RECONCILE = "treegrpo.reconcile"
QUEUE = "treegrpo"


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
        # A job can run for days; a shorter visibility timeout would redeliver it mid-run.
        "broker_transport_options": {"visibility_timeout": settings.max_job_seconds + 3600},
    }
    if url.startswith("filesystem://"):
        folder = settings.broker_folder
        for sub in ("queue", "processed"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            # kombu polls the folder; its 1 s default makes every job wait a second.
            "polling_interval": 0.05,
        }
    return config


@lru_cache(maxsize=4)
def _sender(broker_url: str) -> Celery:
    settings = get_settings()
    app = Celery("treegrpo-api")
    app.conf.update(celery_config(settings))
    return app


def enqueue(job_id: int, kind: str, params: dict[str, Any]) -> None:
    """Send the job to the workers. Raises if the broker cannot be reached."""
    sender = _sender(get_settings().resolved_broker_url)
    sender.send_task(task_name(kind, params), args=[job_id], queue=QUEUE)


def ping_broker() -> None:
    """Raises if the broker cannot be reached (readiness)."""
    sender = _sender(get_settings().resolved_broker_url)
    with sender.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)
