"""What a job's child process knows and how it talks back: the row it runs, the artifact store,
the log, the stop request, and ownership checks on every write.

Ownership: the worker claimed the job as attempt N. Every progress write first refreshes the
heartbeat of attempt N; when that answers "not yours" (the reconciler declared the job lost and
another worker claimed it), the child raises LostOwnership and writes nothing more.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError

from backend import crud
from backend.db import session_scope
from backend.storage import relative_to_store, resolve_inside
from treegrpo.config import RunConfig
from workers.joblog import JobLog
from workers.mirror import Mirror

T = TypeVar("T")
# A write that cannot reach the database is tried again for about half a minute before the job
# fails: a database restart should not cost a training run. Every write here is idempotent.
DB_RETRY_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


def with_db_retry(write: Callable[[], T]) -> T:
    for pause in DB_RETRY_PAUSES:
        try:
            return write()
        except OperationalError:
            time.sleep(pause)
    return write()


class LostOwnership(Exception):
    """This attempt no longer owns the job; another attempt (or the reconciler) took it over."""


class StopRequest:
    """A stop asked of the child: the supervisor's stop file, or SIGTERM / SIGINT."""

    def __init__(self, stop_file: Path | None) -> None:
        self.stop_file = stop_file
        self.signalled = threading.Event()

    def requested(self) -> bool:
        if self.signalled.is_set():
            return True
        return self.stop_file is not None and self.stop_file.exists()


@dataclass
class JobContext:
    job_id: int
    attempt: int
    kind: str
    config: RunConfig
    params: dict[str, Any]
    checkpoint_path: str | None
    store: Path
    log: JobLog
    stop: StopRequest
    # Filled in while the job runs, for error messages: the epoch in progress, the last saved.
    notes: dict[str, Any] = field(default_factory=dict)
    # The bucket behind `store` when the artifact store is remote (store is then a local cache).
    mirror: Mirror | None = None
    # The operator's policy for node latents (TREEGRPO_LATENT_DTYPE, TREEGRPO_KEEP_TREE_LATENTS).
    latent_dtype: str = "float32"
    keep_tree_latents: int = 0  # 0: every tree keeps its latents

    def heartbeat(self, progress_step: int | None = None, progress_total: int | None = None) -> str:
        """Refresh the heartbeat (and progress); returns the job's status. LostOwnership when
        this attempt no longer owns the job."""

        def beat() -> str | None:
            with session_scope() as session:
                return crud.heartbeat(
                    session,
                    job_id=self.job_id,
                    attempt=self.attempt,
                    progress_step=progress_step,
                    progress_total=progress_total,
                )

        status = with_db_retry(beat)
        if status is None:
            raise LostOwnership(f"job {self.job_id} attempt {self.attempt} no longer owns the job")
        return status

    def path(self, relpath: str) -> Path:
        """The real path of a store-relative path (refusing anything outside the store)."""
        return resolve_inside(self.store, relpath)

    def relative(self, path: Path) -> str:
        return relative_to_store(self.store, path)

    # With a remote store: what is written goes up before any row names it; what is read comes
    # down first. With a folder store these do nothing.

    def publish(self, relpath: str) -> None:
        if self.mirror is not None:
            self.mirror.publish(relpath)

    def publish_checkpoint(self, relpath: str) -> None:
        if self.mirror is not None:
            self.mirror.publish_checkpoint(relpath)

    def fetch(self, relpath: str) -> None:
        if self.mirror is not None:
            self.mirror.fetch(relpath)

    def delete_folder(self, relpath: str) -> int:
        """Remove a folder from the store (the bucket too when remote) and from this worker's
        copy; the number of files the store held there."""
        local = self.path(relpath)
        if self.mirror is not None and self.mirror.remote:
            removed = self.mirror.store.delete_prefix(relpath)
        else:
            removed = sum(1 for p in local.rglob("*") if p.is_file()) if local.is_dir() else 0
        shutil.rmtree(local, ignore_errors=True)
        return removed

    def fetch_checkpoints(self, relpath: str) -> None:
        if self.mirror is not None:
            self.mirror.fetch_checkpoints(relpath)
