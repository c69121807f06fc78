"""The reconciler: running jobs whose heartbeat went stale are `lost`; lost jobs with a checkpoint
are queued again, and the next worker resumes them from it.

A worker that dies (SIGKILL, power loss, a node taken away) stops heartbeating. The broker may
or may not redeliver its message (Redis redelivers an unacknowledged one only after the
visibility timeout, which is longer than any job; the filesystem transport never does), so the
row, not the broker, decides: every worker runs `reconcile` on a timer thread (and the
`treegrpo.reconcile` task runs it on demand). Several workers may reconcile at once: each
transition is a conditional UPDATE, so a job is marked lost and queued again exactly once.

    reconcile(settings, send)   # -> [(job id, what happened), ...]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from backend import crud
from backend.db import session_scope
from backend.errors import Conflict, NotFound
from backend.settings import Settings
from backend.storage import log_relpath
from workers.joblog import JobLog
from workers.purge import purge_expired
from workers.retention import sweep_tree_latents

logger = logging.getLogger(__name__)

Send = Callable[[int, str, dict[str, Any]], None]


def reconcile_interval(settings: Settings) -> float:
    """How often a worker reconciles: a quarter of the staleness limit, within 1..30 s."""
    return min(30.0, max(1.0, settings.stale_after_seconds / 4))


def queue_again(
    settings: Settings, job_id: int, kind: str, params: dict[str, Any], back_to: str, send: Send
) -> str | None:
    """A resumable job -> queued, with a message to the workers. Returns None when done, else
    why not; a message that cannot be sent puts the job back to `back_to` with that reason."""
    url = settings.resolved_database_url
    try:
        with session_scope(url) as session:
            crud.request_resume(session, job_id=job_id)
    except (Conflict, NotFound) as exc:
        return str(exc)
    try:
        send(job_id, kind, params)
    except Exception as exc:
        reason = (
            f"could not be queued again: the broker refused the message ({type(exc).__name__}: "
            f"{exc}); resume the job once the broker is back"
        )
        with session_scope(url) as session:
            crud.unqueue_job(session, job_id=job_id, status=back_to, error=reason)
        return reason
    return None


def reconcile(settings: Settings, send: Send) -> list[tuple[int, str]]:
    """Mark stale running jobs lost (stale cancelling ones cancelled), queue again the lost
    ones that have a checkpoint, purge deleted jobs past their grace period, and bring every
    job within the latent retention (workers/retention.py)."""
    url = settings.resolved_database_url
    with session_scope(url) as session:
        lost = crud.mark_stale_lost(
            session, stale_before=crud.stale_cutoff(settings.stale_after_seconds)
        )
        found = [
            (job.id, job.kind, dict(job.params or {}), job.checkpoint_path, job.error)
            for job in lost
        ]
        cancelled = {job.id for job in lost if job.status == "cancelled"}
    actions = []
    for job_id, kind, params, checkpoint, error in found:
        log = JobLog(settings.resolved_artifact_dir / log_relpath(job_id), "reconciler")
        log.write(f"job lost: {error}")
        if job_id in cancelled:
            action = "worker lost while the job was being cancelled: cancelled"
        elif not checkpoint:
            action = "lost with no checkpoint; not queued again (resuming starts it over)"
        else:
            problem = queue_again(settings, job_id, kind, params, "lost", send)
            action = problem or f"queued again to resume from {checkpoint}"
        log.write(action)
        logger.warning("job %s: %s", job_id, action)
        actions.append((job_id, action))
    for job_id in purge_expired(settings):
        actions.append((job_id, "deleted past its grace period: artifacts purged"))
    for job_id, removed in sweep_tree_latents(settings):
        actions.append((job_id, f"retention: {removed} latent file(s) of older trees deleted"))
    return actions


class ReconcilerThread(threading.Thread):
    """Runs `reconcile` now and then every `interval` seconds until stopped."""

    def __init__(self, settings: Settings, send: Send, interval: float | None = None) -> None:
        super().__init__(name="treegrpo-reconciler", daemon=True)
        self.settings = settings
        self.send = send
        self.interval = interval if interval is not None else reconcile_interval(settings)
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:
            try:
                reconcile(self.settings, self.send)
            except Exception:  # the database may be down for a moment; try again next round
                logger.exception("reconcile failed")
            if self.stopped.wait(self.interval):
                return

    def stop(self) -> None:
        self.stopped.set()
