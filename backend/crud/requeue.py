"""Queueing a job again from a worker (after a shutdown, or when the reconciler finds it lost),
and undoing that when the message cannot be sent."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from backend.models import Job, JobStatus, utcnow


def unqueue_job(session: Session, *, job_id: int, status: str, error: str) -> bool:
    """queued -> `status` (interrupted or lost) with `error`, when the message that would have
    taken the job to a worker could not be sent: a queued row must always have a message on its
    way. A job a worker already claimed is left alone. Returns whether the row changed. Commits."""
    if status not in (JobStatus.interrupted.value, JobStatus.lost.value):
        raise ValueError(f"a job goes back to interrupted or lost, not {status!r}")
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value)
        .values(status=status, error=error, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
