"""Deleted runs between the delete and the purge: the grace period that lets a delete be undone.

A delete (crud.soft_delete_job) only sets `deleted_at`. Until a worker purges the run's
artifacts (after TREEGRPO_DELETE_GRACE_SECONDS; `purged_at` set) the run is listed among the
recently deleted and can be restored.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from backend.errors import Conflict, NotFound
from backend.models import Job, utcnow


def recently_deleted(session: Session, *, limit: int = 50) -> tuple[list[Job], int]:
    """Deleted jobs whose artifacts are still there, the latest deleted first; (page, count)."""
    where = (Job.deleted_at.is_not(None), Job.purged_at.is_(None))
    count = session.scalar(select(func.count(Job.id)).where(*where)) or 0
    rows = session.scalars(
        select(Job).where(*where).order_by(Job.deleted_at.desc(), Job.id.desc()).limit(limit)
    ).all()
    return list(rows), count


def deleted_job(session: Session, *, job_id: int) -> Job:
    """A deleted, not yet purged job (NotFound otherwise: unknown, live, or purged)."""
    job = session.get(Job, job_id)
    if job is None or job.deleted_at is None:
        raise NotFound("deleted job", job_id)
    if job.purged_at is not None:
        raise Conflict(f"job {job_id} was purged (its artifacts are gone): it cannot be restored")
    return job


def restore_job(session: Session, *, job_id: int) -> Job:
    """Undo a delete: the job is listed again, as it was. A purged job is a Conflict. Commits."""
    job = deleted_job(session, job_id=job_id)
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.deleted_at.is_not(None), Job.purged_at.is_(None))
        .values(deleted_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    session.refresh(job)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"job {job_id} was purged while it was being restored")
    return job


def due_for_purge(session: Session, *, deleted_before: datetime, limit: int = 100) -> list[int]:
    """Ids of deleted jobs past their grace period whose artifacts are still there."""
    return list(
        session.scalars(
            select(Job.id)
            .where(
                Job.deleted_at.is_not(None),
                Job.deleted_at < deleted_before,
                Job.purged_at.is_(None),
            )
            .order_by(Job.id)
            .limit(limit)
        ).all()
    )


def mark_purged(session: Session, *, job_id: int) -> bool:
    """Set `purged_at` of a deleted job (False when it is not deleted: restored meanwhile).
    Commits."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.deleted_at.is_not(None), Job.purged_at.is_(None))
        .values(purged_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
