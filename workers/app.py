"""The workers' Celery app, configured from the backend's settings.

The broker options come from `backend.queue.celery_config`, which the API's sender uses too:
Redis in compose, kombu's filesystem transport in the embedded default. On top of them, the
options of long GPU jobs (Celery's docs; ARCHITECTURE.md section 4):

- prefetch 1 and `acks_late`: a worker holds at most the message it runs, acknowledged only
  when the job is over; `task_reject_on_worker_lost` returns it if the pool process dies;
- a visibility timeout longer than the longest job (set in celery_config), so Redis never
  redelivers a message while its job is still running;
- the thread pool: a task only supervises the child process that does the work (no torch, no
  CUDA here), and `--concurrency N` runs N jobs, one child process (one GPU) each.

    treegrpo worker --concurrency 1 --queues treegrpo      # or: celery -A workers.app worker
    treegrpo worker --queues treegrpo-interactive         # the interactive lane (no training)
"""

from __future__ import annotations

import logging
import threading
from functools import cache
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down

from backend.queue import QUEUE, QUEUES, celery_config, queue_of, task_name
from backend.settings import Settings, get_settings
from workers.reconcile import ReconcilerThread, Send
from workers.supervisor import SHUTTING_DOWN, WARM

logger = logging.getLogger(__name__)


class WorkerApp(Celery):
    """A Celery app that carries the settings its tasks run with."""

    settings: Settings
    reconciler: ReconcilerThread | None = None


def worker_config(settings: Settings) -> dict[str, Any]:
    """The shared broker settings plus the workers' own."""
    config = celery_config(settings)
    config.update(
        {
            "worker_prefetch_multiplier": 1,
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_concurrency": 1,
            "worker_pool": "threads",
            # A broker blip must not abandon a days-long job: the row is the truth, and the
            # reconciler deals with a job whose worker is really gone.
            "worker_cancel_long_running_tasks_on_connection_loss": False,
            "worker_send_task_events": False,
            "task_send_sent_event": False,
            "worker_hijack_root_logger": True,
        }
    )
    return config


def create_app(settings: Settings | None = None) -> WorkerApp:
    """A worker app bound to `settings`, with the tasks of backend/queue.py registered."""
    from workers.tasks import register_tasks

    settings = settings or get_settings()
    app = WorkerApp("treegrpo-worker", set_as_current=False)
    app.settings = settings
    app.conf.update(worker_config(settings))
    register_tasks(app)
    return app


def consumed_queue(app: Celery) -> str:
    """The first queue this worker consumes (where it sends jobs it queues again)."""
    queues = list(app.amqp.queues.consume_from or {})
    return str(queues[0]) if queues else QUEUE


def requeue_target(app: Celery, kind: str) -> str:
    """Where a job goes back to: its lane's queue (as the API sends it) on a worker of the
    standard queues; on a worker of private queues (tests), the first queue it consumes."""
    consumed = set(app.amqp.queues.consume_from or {})
    if consumed & set(QUEUES.values()):
        return queue_of(kind)
    return consumed_queue(app)


def sender(app: Celery, queue: str | None = None) -> Send:
    """A function sending a job's message, as the API does (the same task names)."""

    def send(job_id: int, kind: str, params: dict[str, Any]) -> None:
        app.send_task(
            task_name(kind, params),
            args=[job_id],
            queue=queue or requeue_target(app, kind),
            retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.5},
        )

    return send


@worker_ready.connect(weak=False, dispatch_uid="treegrpo-worker-ready")
def _start_reconciler(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if not isinstance(app, WorkerApp) or app.reconciler is not None:
        return
    SHUTTING_DOWN.clear()
    app.reconciler = ReconcilerThread(app.settings, _sender_of(app))
    app.reconciler.start()
    logger.info("reconciler: every %.0f s", app.reconciler.interval)
    if serves_interactive(app):
        # The warm process imports torch now, so the first branch does not wait for it.
        threading.Thread(target=WARM.prestart, args=(app.settings,), daemon=True).start()
        logger.info("interactive lane: warm process started")


def serves_interactive(app: Celery) -> bool:
    """Whether this worker consumes an interactive queue (the lane's, or a private one named
    like it)."""
    return any(str(name).endswith("interactive") for name in app.amqp.queues.consume_from or {})


def _sender_of(app: WorkerApp) -> Send:
    return sender(app)


@worker_shutting_down.connect(weak=False, dispatch_uid="treegrpo-worker-shutdown")
def _on_shutdown(**_: Any) -> None:
    # Runs in the worker's main process; the supervisors (threads of it) see the flag.
    SHUTTING_DOWN.set()


@cache
def default_app() -> WorkerApp:
    return create_app()


def __getattr__(name: str) -> Any:
    # `celery -A workers.app worker` reads `app`; made on first use so importing this module
    # neither reads the environment nor creates the broker folders.
    if name == "app":
        return default_app()
    raise AttributeError(name)
