"""Prompt dataset versions and the jobs that read them (treegrpo/datasets/ holds the files)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.errors import Conflict, NotFound
from backend.models import Dataset, Job, JobDataset


def create_dataset(
    session: Session,
    *,
    name: str,
    manifest: Mapping[str, Any],
    owner_key_id: int | None = None,
) -> tuple[Dataset, bool]:
    """The row of a finished version (its files already in the store); (row, created). The
    same content under the same name again is the existing row."""
    sha = str(manifest["sha256"])
    found = session.scalar(select(Dataset).where(Dataset.name == name, Dataset.sha256 == sha))
    if found is not None:
        return found, False
    splits = manifest["splits"]
    row = Dataset(
        name=name,
        sha256=sha,
        rows=int(manifest["rows"]),
        bytes=sum(int(info["bytes"]) for info in splits.values()),
        splits={split: int(info["rows"]) for split, info in splits.items()},
        columns=list(manifest.get("columns", [])),
        source=dict(manifest.get("source", {})),
        owner_key_id=owner_key_id,
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return row, True


def get_dataset(session: Session, *, dataset_id: int) -> Dataset:
    row = session.get(Dataset, dataset_id)
    if row is None:
        raise NotFound("dataset", dataset_id)
    return row


def find_dataset(session: Session, *, name_or_id: str) -> Dataset:
    """A dataset by id (digits) or name (its newest version)."""
    text = name_or_id.strip()
    if text.isdigit():
        return get_dataset(session, dataset_id=int(text))
    row = session.scalar(
        select(Dataset).where(Dataset.name == text).order_by(Dataset.id.desc()).limit(1)
    )
    if row is None:
        raise NotFound("dataset", text)
    return row


def list_datasets(
    session: Session, *, limit: int = 100, offset: int = 0
) -> tuple[list[Dataset], int]:
    rows = list(
        session.scalars(select(Dataset).order_by(Dataset.id.desc()).limit(limit).offset(offset))
    )
    total = session.scalar(select(func.count()).select_from(Dataset)) or 0
    return rows, int(total)


def jobs_using(session: Session, *, dataset_ids: list[int]) -> dict[int, list[int]]:
    """dataset id -> ids of the (not deleted) jobs that read it."""
    if not dataset_ids:
        return {}
    pairs = session.execute(
        select(JobDataset.dataset_id, JobDataset.job_id)
        .join(Job, Job.id == JobDataset.job_id)
        .where(JobDataset.dataset_id.in_(dataset_ids), Job.deleted_at.is_(None))
        .order_by(JobDataset.job_id)
    )
    out: dict[int, list[int]] = {i: [] for i in dataset_ids}
    for dataset_id, job_id in pairs:
        out[dataset_id].append(job_id)
    return out


def link_job(session: Session, *, job_id: int, dataset_ids: list[int]) -> None:
    for dataset_id in dict.fromkeys(dataset_ids):
        session.add(JobDataset(job_id=job_id, dataset_id=dataset_id))
    session.commit()


def delete_dataset(session: Session, *, dataset_id: int) -> bool:
    """Delete a version no job uses (Conflict naming the jobs otherwise). True when no other
    row keeps its content, so its files may go from the store."""
    row = get_dataset(session, dataset_id=dataset_id)
    users = jobs_using(session, dataset_ids=[row.id])[row.id]
    if users:
        shown = ", ".join(str(j) for j in users[:10]) + (" ..." if len(users) > 10 else "")
        raise Conflict(
            f"dataset {row.id} ({row.name}) is used by job(s) {shown}: delete those jobs first"
        )
    sha = row.sha256
    session.delete(row)
    session.commit()
    others = session.scalar(select(func.count()).select_from(Dataset).where(Dataset.sha256 == sha))
    return not others
