"""Gallery items per epoch; writing an epoch again (after a resume) replaces it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from backend.models import Sample


def add_samples(
    session: Session, *, job_id: int, epoch: int, items: Sequence[dict[str, Any]]
) -> int:
    """items: {prompt, image_path, reward?, rewards?}, in gallery order. Commits."""
    session.execute(delete(Sample).where(Sample.job_id == job_id, Sample.epoch == epoch))
    for index, item in enumerate(items):
        session.add(
            Sample(
                job_id=job_id,
                epoch=epoch,
                index=index,
                prompt=item["prompt"],
                image_path=item["image_path"],
                reward=item.get("reward"),
                rewards=item.get("rewards"),
            )
        )
    session.commit()
    return len(items)


def list_samples(
    session: Session, *, job_id: int, epoch: int | None = None, limit: int = 200, offset: int = 0
) -> tuple[list[Sample], int]:
    query = select(Sample).where(Sample.job_id == job_id)
    if epoch is not None:
        query = query.where(Sample.epoch == epoch)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Sample.epoch, Sample.index).limit(limit).offset(offset)
    ).all()
    return list(rows), count


def sample_epochs(session: Session, *, job_id: int) -> list[int]:
    return list(
        session.scalars(
            select(Sample.epoch).where(Sample.job_id == job_id).distinct().order_by(Sample.epoch)
        ).all()
    )


def max_sample_id(session: Session, *, job_id: int) -> int:
    return session.scalar(select(func.max(Sample.id)).where(Sample.job_id == job_id)) or 0


def sample_epochs_after(
    session: Session, *, job_id: int, after_id: int, up_to_id: int | None = None
) -> tuple[list[int], int]:
    """Epochs with gallery rows newer than `after_id`, and the newest row id seen (the cursor)."""
    query = select(Sample.epoch, func.max(Sample.id)).where(
        Sample.job_id == job_id, Sample.id > after_id
    )
    if up_to_id is not None:
        query = query.where(Sample.id <= up_to_id)
    rows = session.execute(query.group_by(Sample.epoch).order_by(Sample.epoch)).all()
    cursor = max([after_id, *(int(row[1]) for row in rows)])
    return [int(row[0]) for row in rows], cursor
