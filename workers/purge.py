"""Purging deleted runs: a delete can be undone for TREEGRPO_DELETE_GRACE_SECONDS (a day by
default); after that the reconciler removes the run's artifacts for good and marks it purged.

    purge_job(settings, job_id)      # remove one deleted job's artifacts now (the purge task)
    purge_expired(settings)          # every deleted job past its grace period (the reconciler)
"""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta

from backend import crud
from backend.artifact_store import open_store
from backend.db import session_scope
from backend.errors import NotFound
from backend.models import utcnow
from backend.settings import Settings
from backend.storage import job_dir

logger = logging.getLogger(__name__)


def purge_job(settings: Settings, job_id: int) -> int:
    """Remove a deleted job's artifacts (its folder in the store, and a remote store's local
    cache) and mark it purged. A job that is not deleted (or restored meanwhile) is left
    alone. Safe to run twice. Returns the number of files removed."""
    with session_scope(settings.resolved_database_url) as session:
        try:
            job = crud.get_job(session, job_id=job_id, include_deleted=True)
        except NotFound:
            return 0
        if job.deleted_at is None:
            logger.warning("purge of job %s refused: the job is not deleted", job_id)
            return 0
        # Marked first: from now on a restore is refused, so it never races the removal.
        if job.purged_at is None and not crud.mark_purged(session, job_id=job_id):
            logger.warning("purge of job %s refused: it was restored", job_id)
            return 0
    store = open_store(settings)
    removed = store.delete_prefix(job_dir(job_id))
    if store.remote:
        shutil.rmtree(settings.resolved_artifact_dir / job_dir(job_id), ignore_errors=True)
    logger.info("job %s deleted: %s artifact file(s) removed", job_id, removed)
    return removed


def purge_expired(settings: Settings) -> list[int]:
    """Purge every deleted job whose grace period is over; the ids purged."""
    cutoff = utcnow() - timedelta(seconds=settings.delete_grace_seconds)
    with session_scope(settings.resolved_database_url) as session:
        due = crud.due_for_purge(session, deleted_before=cutoff)
    for job_id in due:
        purge_job(settings, job_id)
    return due
