"""Experiments: a grid's request row and the jobs that are its runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from backend.errors import Conflict, NotFound
from backend.models import ACTIVE_STATUSES, Experiment, Job, Metric, utcnow


def create_experiment(
    session: Session,
    *,
    name: str,
    preset: str | None,
    config: dict[str, Any],
    axes: dict[str, Any],
    budget: dict[str, Any],
    evaluation: dict[str, Any],
    owner_key_id: int | None = None,
) -> Experiment:
    """Insert the experiment row (its jobs come after, pointing at it). Commits."""
    experiment = Experiment(
        name=name,
        preset=preset,
        config=config,
        axes=axes,
        budget=budget,
        evaluation=evaluation,
        owner_key_id=owner_key_id,
    )
    session.add(experiment)
    session.commit()
    session.refresh(experiment)
    return experiment


def get_experiment(session: Session, *, experiment_id: int) -> Experiment:
    experiment = session.get(Experiment, experiment_id)
    if experiment is None or experiment.deleted_at is not None:
        raise NotFound("experiment", experiment_id)
    return experiment


def list_experiments(
    session: Session, *, limit: int = 50, offset: int = 0
) -> tuple[list[Experiment], int]:
    """Newest first, deleted ones left out."""
    where = Experiment.deleted_at.is_(None)
    rows = session.scalars(
        select(Experiment).where(where).order_by(Experiment.id.desc()).limit(limit).offset(offset)
    ).all()
    count = session.scalar(select(func.count()).select_from(Experiment).where(where)) or 0
    return list(rows), int(count)


def experiment_jobs(session: Session, *, experiment_id: int) -> list[Job]:
    """The experiment's runs (deleted ones left out), in the order they were made."""
    return list(
        session.scalars(
            select(Job)
            .where(Job.experiment_id == experiment_id, Job.deleted_at.is_(None))
            .order_by(Job.id)
        ).all()
    )


def experiment_status_counts(
    session: Session, *, experiment_ids: list[int]
) -> dict[int, dict[str, int]]:
    """experiment id -> status -> number of its runs."""
    counts: dict[int, dict[str, int]] = {one: {} for one in experiment_ids}
    if not experiment_ids:
        return counts
    rows = session.execute(
        select(Job.experiment_id, Job.status, func.count())
        .where(Job.experiment_id.in_(experiment_ids), Job.deleted_at.is_(None))
        .group_by(Job.experiment_id, Job.status)
    ).all()
    for experiment_id, status, number in rows:
        if experiment_id is not None:
            counts[int(experiment_id)][str(status)] = int(number)
    return counts


def metric_series(
    session: Session, *, job_ids: list[int], names: list[str]
) -> dict[int, dict[int, dict[str, float]]]:
    """job id -> step -> name -> value, for the named metrics of many jobs at once."""
    series: dict[int, dict[int, dict[str, float]]] = {one: {} for one in job_ids}
    if not job_ids:
        return series
    rows = session.execute(
        select(Metric.job_id, Metric.step, Metric.name, Metric.value).where(
            Metric.job_id.in_(job_ids), Metric.name.in_(names)
        )
    ).all()
    for job_id, step, name, value in rows:
        series[int(job_id)].setdefault(int(step), {})[str(name)] = float(value)
    return series


def soft_delete_experiment(session: Session, *, experiment_id: int) -> list[int]:
    """Mark the experiment and all its runs deleted; a Conflict while any run is still queued,
    running or cancelling (cancel the experiment first). Returns the deleted jobs' ids. Commits."""
    experiment = get_experiment(session, experiment_id=experiment_id)
    jobs = experiment_jobs(session, experiment_id=experiment_id)
    active = [job.id for job in jobs if job.status in {s.value for s in ACTIVE_STATUSES}]
    if active:
        raise Conflict(
            f"experiment {experiment_id} has runs still going ({', '.join(map(str, active))}); "
            "cancel it before deleting it"
        )
    now = utcnow()
    ids = [job.id for job in jobs]
    if ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(ids))
            .values(deleted_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    experiment.deleted_at = now
    session.commit()
    return ids
