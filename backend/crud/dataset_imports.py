"""The progress rows of running dataset imports (backend/import_progress.py writes them, GET
/datasets/imports/{id} reads them). A row whose import stopped writing for STALE_SECONDS (its
process died) is neither answered nor kept from a new import with the same id."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.models import DatasetImport, utcnow

# Longer than any quiet stretch of a live import (a report comes with every few MB read).
STALE_SECONDS = 600


def _stale(row: DatasetImport) -> bool:
    return utcnow() - row.updated_at > timedelta(seconds=STALE_SECONDS)


def claim_import_progress(session: Session, *, progress_id: str) -> bool:
    """The import's row at `starting`; False when a live import (another request) has the id.
    Commits."""
    row = session.get(DatasetImport, progress_id)
    if row is not None and not _stale(row):
        return False
    if row is None:
        row = DatasetImport(progress_id=progress_id)
        session.add(row)
    row.phase, row.done, row.total, row.updated_at = "starting", 0, 0, utcnow()
    try:
        session.commit()
    except IntegrityError:  # another request claimed it at the same moment
        session.rollback()
        return False
    return True


def set_import_progress(
    session: Session, *, progress_id: str, phase: str, done: int, total: int
) -> None:
    """Commits."""
    row = session.get(DatasetImport, progress_id)
    if row is not None:
        row.phase, row.done, row.total, row.updated_at = phase, done, total, utcnow()
        session.commit()


def end_import_progress(session: Session, *, progress_id: str) -> None:
    """Commits."""
    session.execute(delete(DatasetImport).where(DatasetImport.progress_id == progress_id))
    session.commit()


def import_progress(session: Session, *, progress_id: str) -> dict[str, Any] | None:
    """{phase, done, total} of a live import, else None."""
    row = session.get(DatasetImport, progress_id)
    if row is None or _stale(row):
        return None
    return {"phase": row.phase, "done": row.done, "total": row.total}
