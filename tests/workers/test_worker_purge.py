"""A delete can be undone until its grace period ends; then the reconciler purges the run's
artifacts for good and a restore is refused (workers/purge.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from worker_db import claim, local_settings, new_job

from backend import crud
from backend.db import session_scope
from backend.errors import Conflict
from backend.models import Job, utcnow
from backend.settings import Settings
from backend.storage import job_dir
from workers.purge import purge_job
from workers.reconcile import reconcile


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    with local_settings(tmp_path, monkeypatch, delete_grace_seconds=3600) as made:
        yield made


def _finished_with_files(settings: Settings) -> tuple[int, Path]:
    job_id = new_job()
    attempt = claim(job_id)
    with session_scope() as session:
        crud.finish_job(session, job_id=job_id, attempt=attempt, status="succeeded")
    folder = settings.resolved_artifact_dir / job_dir(job_id)
    (folder / "samples").mkdir(parents=True)
    (folder / "samples" / "0.png").write_bytes(b"png")
    return job_id, folder


def _deleted_ago(job_id: int, seconds: float) -> None:
    with session_scope() as session:
        crud.soft_delete_job(session, job_id=job_id)
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(deleted_at=utcnow() - timedelta(seconds=seconds))
        )
        session.commit()


def test_the_reconciler_purges_only_past_the_grace_period(settings: Settings) -> None:
    recent, recent_files = _finished_with_files(settings)
    old, old_files = _finished_with_files(settings)
    _deleted_ago(recent, 60)  # within the hour: restorable, files kept
    _deleted_ago(old, 3601)  # past it: purged

    actions = dict(reconcile(settings, lambda *message: None))

    assert "purged" in actions[old] and recent not in actions
    assert not old_files.exists() and (recent_files / "samples" / "0.png").exists()
    with session_scope() as session:
        assert crud.get_job(session, job_id=old, include_deleted=True).purged_at is not None
        listed, count = crud.recently_deleted(session)
        assert [job.id for job in listed] == [recent] and count == 1
        with pytest.raises(Conflict, match="purged"):
            crud.restore_job(session, job_id=old)
        restored = crud.restore_job(session, job_id=recent)
        assert restored.deleted_at is None and restored.status == "succeeded"
    # Run again: nothing more to do, and the restored run keeps its files.
    assert dict(reconcile(settings, lambda *message: None)) == {}
    assert (recent_files / "samples" / "0.png").exists()


def test_a_restored_job_is_never_purged(settings: Settings) -> None:
    job_id, files = _finished_with_files(settings)
    _deleted_ago(job_id, 10)
    with session_scope() as session:
        crud.restore_job(session, job_id=job_id)
    # The purge task that a zero grace period would have sent arrives late: it does nothing.
    assert purge_job(settings, job_id) == 0
    assert files.exists()
    with session_scope() as session:
        assert crud.get_job(session, job_id=job_id).purged_at is None
