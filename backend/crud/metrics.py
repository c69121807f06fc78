"""Metric points, idempotent on (job, step, name): a resumed job never duplicates a point."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from backend.models import Job, Metric

# The metric a job row keeps its latest value of (jobs.latest_reward): the run tables' reward.
REWARD_METRIC = "reward_mean"


def upsert_metrics(session: Session, *, job_id: int, step: int, values: Mapping[str, float]) -> int:
    """Write one step's points; a point already there is overwritten. Non-finite values are
    dropped (JSON has no NaN, and a NaN point would hide the rest of a curve). Commits."""
    rows = [
        {"job_id": job_id, "step": step, "name": name, "value": float(value)}
        for name, value in values.items()
        if value is not None and math.isfinite(float(value))
    ]
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(Metric).values(rows)
    statement = statement.on_conflict_do_update(
        index_elements=["job_id", "step", "name"], set_={"value": statement.excluded.value}
    )
    session.execute(statement)
    reward = next((row["value"] for row in rows if row["name"] == REWARD_METRIC), None)
    if reward is not None:
        # Same transaction as the point. A rewrite of an older step leaves a later one standing.
        session.execute(
            update(Job)
            .where(
                Job.id == job_id,
                or_(Job.latest_reward_step.is_(None), Job.latest_reward_step <= step),
            )
            .values(latest_reward=reward, latest_reward_step=step)
            .execution_options(synchronize_session=False)
        )
    session.commit()
    return len(rows)


def delete_metrics_after(session: Session, *, job_id: int, step: int) -> int:
    """Drop points past a checkpoint's step before a resumed run writes them again."""
    result = session.execute(delete(Metric).where(Metric.job_id == job_id, Metric.step > step))
    _refresh_latest_reward(session, job_id=job_id)
    session.commit()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _refresh_latest_reward(session: Session, *, job_id: int) -> None:
    """The job row's latest reward from the points that remain (after a resume's delete)."""
    last = session.execute(
        select(Metric.step, Metric.value)
        .where(Metric.job_id == job_id, Metric.name == REWARD_METRIC)
        .order_by(Metric.step.desc())
        .limit(1)
    ).first()
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(
            latest_reward=None if last is None else last.value,
            latest_reward_step=None if last is None else last.step,
        )
        .execution_options(synchronize_session=False)
    )


def list_metrics(
    session: Session,
    *,
    job_id: int,
    names: Iterable[str] = (),
    since_step: int | None = None,
    after_id: int | None = None,
    limit: int = 10_000,
) -> list[Metric]:
    """Ordered by step then name. `since_step` keeps steps > since_step; `after_id` keeps rows
    inserted after a given id (the /events stream's cursor)."""
    query = select(Metric).where(Metric.job_id == job_id)
    names = list(names)
    if names:
        query = query.where(Metric.name.in_(names))
    if since_step is not None:
        query = query.where(Metric.step > since_step)
    if after_id is not None:
        query = query.where(Metric.id > after_id)
    return list(session.scalars(query.order_by(Metric.step, Metric.name).limit(limit)).all())


def count_metrics(
    session: Session, *, job_id: int, names: Iterable[str] = (), since_step: int | None = None
) -> int:
    """How many points list_metrics would return without a limit."""
    query = select(func.count(Metric.id)).where(Metric.job_id == job_id)
    names = list(names)
    if names:
        query = query.where(Metric.name.in_(names))
    if since_step is not None:
        query = query.where(Metric.step > since_step)
    return session.scalar(query) or 0


def max_metric_id(session: Session, *, job_id: int) -> int:
    """The newest point's row id (0 when none): the /events stream's starting cursor."""
    return session.scalar(select(func.max(Metric.id)).where(Metric.job_id == job_id)) or 0


def metrics_after(
    session: Session,
    *,
    job_id: int,
    after_id: int,
    up_to_id: int | None = None,
    since_step: int | None = None,
    limit: int = 10_000,
) -> list[Metric]:
    """Points with after_id < id (<= up_to_id), in insertion order: the /events stream's feed.
    One trainer writes a job's points, one step per transaction, so ids follow commit order."""
    query = select(Metric).where(Metric.job_id == job_id, Metric.id > after_id)
    if up_to_id is not None:
        query = query.where(Metric.id <= up_to_id)
    if since_step is not None:
        query = query.where(Metric.step > since_step)
    return list(session.scalars(query.order_by(Metric.id).limit(limit)).all())


def metric_names(session: Session, *, job_id: int) -> list[str]:
    return list(
        session.scalars(
            select(Metric.name).where(Metric.job_id == job_id).distinct().order_by(Metric.name)
        ).all()
    )


def last_step(session: Session, *, job_id: int) -> int | None:
    return session.scalar(select(func.max(Metric.step)).where(Metric.job_id == job_id))


def latest_values(session: Session, *, job_ids: Iterable[int], name: str) -> dict[int, float]:
    """The value of `name` at each job's highest step, for run tables."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    # One index probe per job (the (job_id, name, step) index, read backwards, LIMIT 1): fast
    # whatever the planner's statistics say, unlike a join against a grouped subquery.
    last = (
        select(Metric.value)
        .where(Metric.job_id == Job.id, Metric.name == name)
        .order_by(Metric.step.desc())
        .limit(1)
        .correlate(Job)
        .scalar_subquery()
    )
    rows = session.execute(select(Job.id, last).where(Job.id.in_(ids))).all()
    return {job_id: value for job_id, value in rows if value is not None}
