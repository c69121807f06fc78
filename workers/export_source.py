"""Where `treegrpo export JOB_ID` finds a studio job's checkpoints (entry point of the
`treegrpo.job_sources` group, so the core command never imports the studio).

    treegrpo export 12 --format lora --out job12-lora        # the job's latest checkpoint
    treegrpo export 12 --format pipeline --epoch 4 --out job12-pipe

The checkpoints are read from this machine's artifact store (TREEGRPO_ARTIFACT_DIR); with a
bucket store (TREEGRPO_ARTIFACT_URL) the chosen checkpoint is downloaded into that folder first,
as a worker would before resuming it. Only complete checkpoints are ever fetched.
"""

from __future__ import annotations

from pathlib import Path

from backend.settings import Settings, get_settings
from backend.storage import checkpoints_relpath
from treegrpo.checkpoint import PREFIX
from workers.mirror import Mirror


def job_checkpoints(
    job_id: int, epoch: int | None = None, settings: Settings | None = None
) -> Path:
    """The local checkpoints folder of job `job_id`, holding its latest checkpoint (or the one of
    `epoch`). LookupError when the store has none."""
    settings = settings or get_settings()
    mirror = Mirror.of(settings)
    key = checkpoints_relpath(job_id)
    if mirror.remote:
        folders = mirror.store.complete_checkpoints(key)
        if epoch is not None:
            folders = [f for f in folders if f.endswith(f"/{PREFIX}{epoch:06d}")]
        if folders:
            mirror.fetch(folders[-1])
    folder = mirror.local(key)
    if not folder.is_dir() or not any(folder.glob(f"{PREFIX}*/state.json")):
        raise LookupError(
            f"job {job_id} has no checkpoint in the artifact store "
            f"({settings.artifact_url or settings.resolved_artifact_dir})"
        )
    return folder
