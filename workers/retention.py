"""Retention of node latents (TREEGRPO_KEEP_TREE_LATENTS = N > 0): only each job's N newest
logged trees keep the latents that "branch again" starts from.

A job enforces it itself each time it logs a tree (workers/recorder.py). That left two cases
where latents stayed past the limit until the job logged again, which a finished job never
does: the operator lowering N (or setting it for the first time) on a studio full of runs, and
a worker that died between a tree's rows and its retention. So every worker's reconciler also
sweeps: the jobs found over the limit in one query, each brought within it.

    sweep_tree_latents(settings)    # -> [(job id, latent files deleted), ...]
"""

from __future__ import annotations

import logging
import posixpath
import shutil
from collections.abc import Callable, Iterable

from backend import crud
from backend.artifact_store import open_store
from backend.db import session_scope
from backend.settings import Settings
from backend.storage import log_relpath
from workers.joblog import JobLog

logger = logging.getLogger(__name__)


def is_latents_folder(folder: str) -> bool:
    """Only ever a tree's own `latents/` folder is deleted whole, never anything above it."""
    head, name = posixpath.split(folder)
    return name == "latents" and bool(head)


def delete_latent_folders(
    job_id: int, folders: Iterable[str], delete_folder: Callable[[str], int]
) -> int:
    """Deletes each of `folders` that is a latents/ folder through `delete_folder` (which
    answers how many files went); anything else is left in place with a warning. Returns the
    files deleted. The job's own recorder and the reconciler's sweep both come through here."""
    removed = 0
    for folder in folders:
        if not is_latents_folder(folder):
            logger.warning(
                "job %s: latents in %r left in place (not a latents/ folder)", job_id, folder
            )
            continue
        removed += delete_folder(folder)
    return removed


def dropped_note(removed: int, keep: int) -> str:
    return (
        f"retention: deleted {removed} latent file(s) of trees older than the job's {keep} "
        "newest (TREEGRPO_KEEP_TREE_LATENTS); those trees can no longer be branched"
    )


def sweep_tree_latents(settings: Settings) -> list[tuple[int, int]]:
    """Bring every live job within the limit: rows first (from then on no answer offers a
    branch from those trees), then the files, from the store and this worker's local copy."""
    keep = settings.keep_tree_latents
    if keep <= 0:
        return []
    url = settings.resolved_database_url
    with session_scope(url) as session:
        due = crud.jobs_over_tree_latent_limit(session, keep=keep)
    if not due:
        return []
    store = open_store(settings)
    done = []
    for job_id in due:
        with session_scope(url) as session:
            folders = crud.drop_old_tree_latents(session, job_id=job_id, keep=keep)

        def delete_folder(folder: str) -> int:
            deleted = store.delete_prefix(folder)
            if store.remote:
                shutil.rmtree(settings.resolved_artifact_dir / folder, ignore_errors=True)
            return deleted

        removed = delete_latent_folders(job_id, folders, delete_folder)
        if removed:
            JobLog(settings.resolved_artifact_dir / log_relpath(job_id), "reconciler").write(
                dropped_note(removed, keep)
            )
        logger.info("job %s: retention swept %s latent file(s)", job_id, removed)
        done.append((job_id, removed))
    return done
