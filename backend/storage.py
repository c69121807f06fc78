"""The artifact store's layout, and the one check that keeps every served path inside it.

Rows keep paths relative to the store's root (Settings.resolved_artifact_dir). Layout:
    jobs/<id>/job.log                               the job's log (GET /jobs/{id}/logs)
    jobs/<id>/checkpoints/epoch-NNNNNN/             resumable checkpoints
    jobs/<id>/checkpoints/epoch-NNNNNN/lora/        a LoRA run's diffusers export (GET .../export)
    jobs/<id>/trees/epoch-NNNNNN/tree-NN/           tree.json, images/, latents/
    jobs/<id>/samples/epoch-NNNNNN/NNN.png          gallery images
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath


def job_dir(job_id: int) -> str:
    return f"jobs/{job_id}"


def log_relpath(job_id: int) -> str:
    return f"{job_dir(job_id)}/job.log"


def checkpoints_relpath(job_id: int) -> str:
    return f"{job_dir(job_id)}/checkpoints"


def trees_relpath(job_id: int, epoch: int, index: int) -> str:
    return f"{job_dir(job_id)}/trees/epoch-{epoch:06d}/tree-{index:02d}"


def samples_relpath(job_id: int, epoch: int) -> str:
    return f"{job_dir(job_id)}/samples/epoch-{epoch:06d}"


class OutsideStore(ValueError):
    """The path does not name a file inside the artifact store."""


def resolve_inside(root: Path, relpath: str) -> Path:
    """The real path of `relpath` under `root`, or OutsideStore.

    Refuses absolute paths, '..' parts, NUL bytes and backslashes, and then, after resolving
    symlinks, anything whose real location is not under the store's real root.
    """
    if not relpath or "\x00" in relpath or "\\" in relpath:
        raise OutsideStore(relpath)
    pure = PurePosixPath(relpath)
    if pure.is_absolute() or any(part in ("..", "") for part in pure.parts):
        raise OutsideStore(relpath)
    real_root = root.resolve()
    candidate = (real_root / pure).resolve()
    if not candidate.is_relative_to(real_root) or candidate == real_root:
        raise OutsideStore(relpath)
    return candidate


def relative_to_store(root: Path, path: Path) -> str:
    """A path under the store as the relative POSIX string rows keep."""
    return path.resolve().relative_to(root.resolve()).as_posix()
