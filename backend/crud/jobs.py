"""Job rows: create, read, list, and the state transitions of ARCHITECTURE.md section 4.

Every transition is one conditional UPDATE, so concurrent API calls and workers cannot both win.
A worker's writes carry the `attempt` it claimed; a stale process (an older attempt) changes
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import (
    RowMapping,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached

from backend.errors import Conflict, NotFound, QuotaExceeded
from backend.models import (
    ACTIVE_STATUSES,
    RESUMABLE_STATUSES,
    ApiKey,
    Job,
    JobStatus,
    utcnow,
)


def create_job(
    session: Session,
    *,
    kind: str,
    name: str,
    config: dict[str, Any],
    algorithm: str,
    preset: str | None = None,
    params: dict[str, Any] | None = None,
    parent_job_id: int | None = None,
    progress_total: int = 0,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    owner_key_id: int | None = None,
    max_queued: int | None = None,
    experiment_id: int | None = None,
    experiment_group: str | None = None,
) -> tuple[Job, bool]:
    """Insert a queued job owned by `owner_key_id`. Returns (job, created).

    An idempotency key belongs to its owner: one already used by the same owner for the same
    request hash returns that job and False; for a different body, raises Conflict. Another
    owner's use of the same string is never seen. With `max_queued`, an owner that already has
    that many queued jobs gets QuotaExceeded (a replay is still answered). Commits (the caller
    enqueues after commit).
    """
    if idempotency_key is not None:
        existing = _by_idempotency_key(session, idempotency_key, request_hash, owner_key_id)
        if existing is not None:
            return existing, False
    if max_queued is not None and owner_key_id is not None:
        _check_queued_quota(session, owner_key_id=owner_key_id, max_queued=max_queued)
    values = {
        "kind": kind,
        "name": name,
        "status": JobStatus.queued.value,
        "config": config,
        "params": params or {},
        "algorithm": algorithm,
        "preset": preset,
        "parent_job_id": parent_job_id,
        "progress_total": progress_total,
        "idempotency_key": idempotency_key,
        "request_hash": request_hash,
        "owner_key_id": owner_key_id,
        "experiment_id": experiment_id,
        "experiment_group": experiment_group,
    }
    try:
        # A Core INSERT ... RETURNING rather than the ORM's unit of work, which was a fifth of a
        # POST /jobs's server CPU. The row comes back whole (column defaults filled in).
        row = session.connection().execute(_INSERT_JOB, values).mappings().one()
        session.commit()
    except IntegrityError:
        session.rollback()
        if idempotency_key is None:
            raise
        # Another request with the same key won the race: answer with its job.
        existing = _by_idempotency_key(session, idempotency_key, request_hash, owner_key_id)
        if existing is None:
            raise
        return existing, False
    job = Job(**row)
    # As if loaded and the session closed: attached to a session later, it is this row, never
    # a new one to insert.
    make_transient_to_detached(job)
    return job, True


_INSERT_JOB = insert(Job).returning(*Job.__table__.c)


def _by_idempotency_key(
    session: Session, key: str, request_hash: str | None, owner_key_id: int | None
) -> Job | None:
    owner = Job.owner_key_id.is_(None) if owner_key_id is None else Job.owner_key_id == owner_key_id
    job = session.scalar(select(Job).where(Job.idempotency_key == key, owner))
    if job is not None and job.request_hash != request_hash:
        raise Conflict(
            f"Idempotency-Key {key!r} was already used with a different request body (job {job.id})"
        )
    return job


def queued_count(session: Session, *, owner_key_id: int) -> int:
    """How many of the key's jobs wait in a queue (deleted ones are never queued)."""
    query = select(func.count(Job.id)).where(
        Job.owner_key_id == owner_key_id, Job.status == JobStatus.queued.value
    )
    return int(session.scalar(query) or 0)


def _check_queued_quota(session: Session, *, owner_key_id: int, max_queued: int) -> None:
    # Two submissions racing past this count can both land (one over): the quota bounds a flood,
    # it is not an exact reservation, and a lock per key is not worth it here.
    queued = queued_count(session, owner_key_id=owner_key_id)
    if queued >= max_queued:
        raise QuotaExceeded(
            f"this key already has {queued} queued jobs, the most the operator allows "
            f"(TREEGRPO_MAX_QUEUED_PER_KEY={max_queued}); submit again once some have started, "
            "or cancel some",
            limit=max_queued,
        )


def get_job(session: Session, *, job_id: int, include_deleted: bool = False) -> Job:
    """A job; a deleted one is not found unless `include_deleted` (the purge task's read)."""
    job = session.get(Job, job_id)
    if job is None or (job.deleted_at is not None and not include_deleted):
        raise NotFound("job", job_id)
    return job


INTERACTIVE_KINDS = frozenset({"sample"})


def lane_of(kind: str) -> str:
    """The queue a job goes to: sample jobs (branches too) are interactive; train and evaluate
    jobs are training. backend.queue maps lanes to Celery queues."""
    return "interactive" if kind in INTERACTIVE_KINDS else "training"


def queue_positions(session: Session, *, job_ids: Iterable[int]) -> dict[int, int]:
    """For each queued job among `job_ids`: 1 + the queued jobs of its lane created before it
    (1 = the next to start)."""
    wanted = set(job_ids)
    if not wanted:
        return {}
    rows = session.execute(
        select(Job.id, Job.kind)
        .where(Job.status == JobStatus.queued.value, Job.deleted_at.is_(None))
        .order_by(Job.id)
    ).all()
    seen: dict[str, int] = {}
    out: dict[int, int] = {}
    for job_id, kind in rows:
        lane = lane_of(kind)
        seen[lane] = seen.get(lane, 0) + 1
        if job_id in wanted:
            out[job_id] = seen[lane]
    return out


def lane_counts(session: Session) -> dict[str, dict[str, int]]:
    """Queued and running (or cancelling) jobs per lane."""
    counts = {lane: {"queued": 0, "running": 0} for lane in ("training", "interactive")}
    rows = session.execute(
        select(Job.kind, Job.status, func.count(Job.id))
        .where(
            Job.status.in_(
                [JobStatus.queued.value, JobStatus.running.value, JobStatus.cancelling.value]
            )
        )
        .group_by(Job.kind, Job.status)
    ).all()
    for kind, status, count in rows:
        key = "queued" if status == JobStatus.queued.value else "running"
        counts[lane_of(kind)][key] += int(count)
    return counts


MAX_TAGS = 20


def update_job(
    session: Session,
    *,
    job_id: int,
    name: str | None = None,
    tags: Sequence[str] | None = None,
    notes: str | None = None,
) -> Job:
    """Rename, retag (the list replaces the old one; duplicates dropped, order kept) or note a
    job. None leaves a field as it is. Commits."""
    job = get_job(session, job_id=job_id)
    if name is not None:
        job.name = name
    if tags is not None:
        job.tags = list(dict.fromkeys(tags))[:MAX_TAGS]
    if notes is not None:
        job.notes = notes
    job.updated_at = utcnow()
    session.commit()
    session.refresh(job)
    return job


def soft_delete_job(session: Session, *, job_id: int) -> Job:
    """Mark a job deleted (its row stays; a worker removes its artifacts). A job that is queued,
    running or cancelling is a Conflict: cancel it first. Commits."""
    job = get_job(session, job_id=job_id)
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.deleted_at.is_(None),
            Job.status.not_in([s.value for s in ACTIVE_STATUSES]),
        )
        .values(deleted_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    session.refresh(job)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        if job.deleted_at is not None:
            raise NotFound("job", job_id)
        raise Conflict(f"job {job_id} is {job.status}; cancel it before deleting it")
    return job


def escape_like(text: str) -> str:
    """`text` as a literal inside a LIKE pattern with escape character '!'."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def list_jobs(
    session: Session,
    *,
    statuses: Iterable[str] = (),
    kinds: Iterable[str] = (),
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Job], int]:
    """Newest first; returns (page, total count of matching jobs)."""
    query = select(Job).where(Job.deleted_at.is_(None))
    statuses, kinds = list(statuses), list(kinds)
    if statuses:
        query = query.where(Job.status.in_(statuses))
    if kinds:
        query = query.where(Job.kind.in_(kinds))
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Job.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), count


# What a job answer shows, config aside: a list page of 50 would otherwise carry 50 frozen
# configs (about 60 KB of JSON each on the digits preset) that it does not show. Bookkeeping
# columns (idempotency key, request hash, latest_reward_step) stay in the database.
_READ_COLUMNS = tuple(
    column
    for column in Job.__table__.c
    if column.name
    not in ("config", "idempotency_key", "request_hash", "latest_reward_step", "deleted_at")
)


# The submitting key's name, which answers show as the job's owner (a primary-key lookup per row).
_OWNER_NAME = (
    select(ApiKey.name).where(ApiKey.id == Job.owner_key_id).scalar_subquery().label("owner")
)


@dataclass(frozen=True)
class JobFilter:
    """What GET /jobs filters on; every part is optional and they combine with AND."""

    statuses: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # the job has every one of them
    q: str | None = None  # a case-insensitive part of the name

    def shape(self) -> tuple[bool, bool, bool, bool, int, bool]:
        return (
            bool(self.statuses),
            bool(self.kinds),
            bool(self.presets),
            bool(self.algorithms),
            len(self.tags),
            bool(self.q),
        )

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "statuses": list(self.statuses),
            "kinds": list(self.kinds),
            "presets": list(self.presets),
            "algorithms": list(self.algorithms),
            "q": f"%{escape_like(self.q.lower())}%" if self.q else None,
        }
        for index, tag in enumerate(self.tags):
            # Tags are stored as a JSON list, written by orjson (backend/db.py): the same text.
            params[f"tag{index}"] = f"%{escape_like(orjson.dumps(tag).decode())}%"
        return params


NO_FILTER = JobFilter()


def _filtered(query: Select[Any], shape: tuple[bool, bool, bool, bool, int, bool]) -> Select[Any]:
    by_status, by_kind, by_preset, by_algorithm, tags, by_q = shape
    query = query.where(Job.deleted_at.is_(None))
    if by_status:
        query = query.where(Job.status.in_(bindparam("statuses", expanding=True)))
    if by_kind:
        query = query.where(Job.kind.in_(bindparam("kinds", expanding=True)))
    if by_preset:
        query = query.where(Job.preset.in_(bindparam("presets", expanding=True)))
    if by_algorithm:
        query = query.where(Job.algorithm.in_(bindparam("algorithms", expanding=True)))
    for index in range(tags):
        query = query.where(cast(Job.tags, Text).like(bindparam(f"tag{index}"), escape="!"))
    if by_q:
        query = query.where(func.lower(Job.name).like(bindparam("q"), escape="!"))
    return query


@lru_cache(maxsize=64)
def _job_rows_statement(
    by_ids: bool,
    shape: tuple[bool, bool, bool, bool, int, bool],
    with_config: bool,
    with_total: bool = False,
) -> Select[Any]:
    """One prepared statement per filter shape: building a select, and its cache key, costs more
    than running it on a small table, so the API's hot reads reuse these."""
    columns: list[Any] = [*_READ_COLUMNS, _OWNER_NAME]
    if with_total:
        # Every matching row's count on each row of the page: one round trip, not two.
        columns.append(func.count().over().label("total"))
    if with_config:
        # As the stored JSON text: the API splices it into its answer as it is, rather than
        # decoding 60 KB into Python objects and encoding them again.
        columns.append(cast(Job.__table__.c.config, Text).label("config_json"))
    query = select(*columns)
    if by_ids:
        query = query.where(Job.id.in_(bindparam("ids", expanding=True)))
    query = _filtered(query, shape)
    return query.order_by(Job.id.desc()).limit(bindparam("limit")).offset(bindparam("offset"))


@lru_cache(maxsize=32)
def _count_statement(shape: tuple[bool, bool, bool, bool, int, bool]) -> Select[Any]:
    return _filtered(select(func.count(Job.id)), shape)


def job_rows(
    session: Session,
    *,
    job_ids: Iterable[int] | None = None,
    statuses: Iterable[str] = (),
    kinds: Iterable[str] = (),
    limit: int = 50,
    offset: int = 0,
    with_config: bool = False,
) -> list[RowMapping]:
    """Read-only job rows (deleted jobs left out), newest first, in one query and without ORM
    objects: the API's read path. Every column but `config`; with_config adds `config_json`,
    the config as stored JSON text."""
    ids = None if job_ids is None else list(job_ids)
    where = JobFilter(statuses=tuple(statuses), kinds=tuple(kinds))
    statement = _job_rows_statement(ids is not None, where.shape(), with_config)
    params = {"ids": ids, **where.params(), "limit": limit, "offset": offset}
    # Core execution on the session's connection: the ORM's result machinery has nothing to do
    # for plain columns but costs a third of the call.
    return list(session.connection().execute(statement, params).mappings().all())


def job_page(
    session: Session,
    *,
    statuses: Iterable[str] = (),
    kinds: Iterable[str] = (),
    where: JobFilter | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[RowMapping], int]:
    """A page of job_rows (no config) and the count of every matching job. `where` (when
    given) replaces `statuses` and `kinds`."""
    if where is None:
        where = JobFilter(statuses=tuple(statuses), kinds=tuple(kinds))
    statement = _job_rows_statement(False, where.shape(), False, True)
    params = {**where.params(), "limit": limit, "offset": offset}
    rows = list(session.connection().execute(statement, params).mappings().all())
    if rows:
        return rows, int(rows[0]["total"])
    # An empty page says nothing about the total when it starts past the end.
    return rows, count_jobs(session, where=where) if offset else 0


def count_jobs(
    session: Session,
    *,
    statuses: Iterable[str] = (),
    kinds: Iterable[str] = (),
    where: JobFilter | None = None,
) -> int:
    if where is None:
        where = JobFilter(statuses=tuple(statuses), kinds=tuple(kinds))
    statement = _count_statement(where.shape())
    return session.connection().execute(statement, where.params()).scalar() or 0


def claim_job(
    session: Session, *, job_id: int, worker: str, lease_expired_before: datetime | None = None
) -> Job | None:
    """queued -> running for this worker, atomically. None when the job is not queued (a
    redelivered message for a running or finished job does nothing).

    With `lease_expired_before`, a running job that has a checkpoint and whose last heartbeat
    is older may be taken over too (its worker is presumed dead; the job resumes from the
    checkpoint). The attempt goes up, so the old process, should it still be alive, can write
    nothing more and stops at its next heartbeat.
    """
    now = utcnow()
    claimable = Job.status == JobStatus.queued.value
    if lease_expired_before is not None:
        claimable = or_(
            claimable,
            and_(
                Job.status == JobStatus.running.value,
                Job.heartbeat_at < lease_expired_before,
                Job.checkpoint_path.is_not(None),
            ),
        )
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, claimable)
        .values(
            status=JobStatus.running.value,
            worker=worker,
            attempt=Job.attempt + 1,
            started_at=func.coalesce(Job.started_at, now),
            heartbeat_at=now,
            finished_at=None,
            error=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    job = session.get(Job, job_id)
    if job is not None:
        session.refresh(job)
    return job


def lease_held(session: Session, *, job_id: int, lease_expired_before: datetime) -> bool:
    """Whether a worker holds the job now: running or cancelling, heartbeat still fresh."""
    heartbeat = session.scalar(
        select(Job.heartbeat_at).where(
            Job.id == job_id,
            Job.status.in_([JobStatus.running.value, JobStatus.cancelling.value]),
        )
    )
    return heartbeat is not None and heartbeat >= lease_expired_before


def heartbeat(
    session: Session,
    *,
    job_id: int,
    attempt: int,
    progress_step: int | None = None,
    progress_total: int | None = None,
) -> str | None:
    """Refresh the heartbeat of the claimed attempt. Returns the job's status (a worker stops
    when it reads `cancelling`), or None when this attempt no longer owns the job."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress_step is not None:
        values["progress_step"] = progress_step
    if progress_total is not None:
        values["progress_total"] = progress_total
    owned = (
        Job.id == job_id,
        Job.attempt == attempt,
        Job.status.in_([JobStatus.running.value, JobStatus.cancelling.value]),
    )
    result = session.execute(
        update(Job).where(*owned).values(**values).execution_options(synchronize_session=False)
    )
    session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.scalar(select(Job.status).where(Job.id == job_id))


def set_checkpoint(session: Session, *, job_id: int, attempt: int, path: str) -> bool:
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt)
        .values(checkpoint_path=path, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def finish_job(
    session: Session, *, job_id: int, attempt: int, status: str, error: str | None = None
) -> bool:
    """running/cancelling -> succeeded | failed | cancelled | interrupted, for the owning
    attempt only. Returns whether the row changed."""
    if status not in {"succeeded", "failed", "cancelled", "interrupted"}:
        raise ValueError(f"not a final status: {status!r}")
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.attempt == attempt,
            Job.status.in_([JobStatus.running.value, JobStatus.cancelling.value]),
        )
        .values(status=status, error=error, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def mark_enqueue_failed(session: Session, *, job_id: int, error: str) -> bool:
    """queued -> failed when the job's message could not be sent (broker down), so the row
    never sits in `queued` with nothing on its way to a worker. A job a worker already claimed
    is left alone. Returns whether the row changed. Resuming the job queues it again."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value)
        .values(status=JobStatus.failed.value, error=error, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def request_cancel(session: Session, *, job_id: int) -> Job:
    """queued -> cancelled at once; running -> cancelling (the worker checkpoints and stops).
    Cancelling a cancelling job is a no-op; any other state is a Conflict."""
    job = get_job(session, job_id=job_id)
    now = utcnow()
    for source, target in (
        (JobStatus.queued, JobStatus.cancelled),
        (JobStatus.running, JobStatus.cancelling),
    ):
        values: dict[str, Any] = {"status": target.value, "updated_at": now}
        if target is JobStatus.cancelled:
            values["finished_at"] = now
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == source.value)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            session.commit()
            session.refresh(job)
            return job
    session.rollback()
    session.refresh(job)
    if job.status == JobStatus.cancelling.value:
        return job
    raise Conflict(f"job {job_id} is {job.status}; only queued or running jobs can be cancelled")


def request_resume(session: Session, *, job_id: int) -> Job:
    """interrupted | failed | cancelled | lost -> queued. The worker continues from
    jobs.checkpoint_path (or starts over when there is none)."""
    job = get_job(session, job_id=job_id)
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_([s.value for s in RESUMABLE_STATUSES]))
        .values(status=JobStatus.queued.value, error=None, finished_at=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    session.refresh(job)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(
            f"job {job_id} is {job.status}; only interrupted, failed, cancelled or lost jobs "
            "can be resumed"
        )
    return job


def mark_stale_lost(session: Session, *, stale_before: datetime) -> list[Job]:
    """Jobs whose heartbeat is older than `stale_before`: running -> lost; cancelling ->
    cancelled (the user asked it to stop, and it has stopped: its process is gone). Returns the
    jobs changed, refreshed."""
    active = [JobStatus.running.value, JobStatus.cancelling.value]
    stale = session.scalars(
        select(Job).where(Job.status.in_(active), Job.heartbeat_at < stale_before)
    ).all()
    changed: list[Job] = []
    for job in stale:
        since = f"heartbeat stale since {job.heartbeat_at} (worker {job.worker})"
        if job.status == JobStatus.cancelling.value:
            status = JobStatus.cancelled.value
            error = f"cancelled, but its worker was lost before it confirmed: {since}"
        else:
            status, error = JobStatus.lost.value, since
        result = session.execute(
            update(Job)
            .where(Job.id == job.id, Job.attempt == job.attempt, Job.status == job.status)
            .values(status=status, error=error, finished_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            changed.append(job)
    session.commit()
    for job in changed:
        session.refresh(job)
    return changed


def stale_cutoff(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)


def count_active(session: Session) -> int:
    return (
        session.scalar(
            select(func.count(Job.id)).where(Job.status.in_([s.value for s in ACTIVE_STATUSES]))
        )
        or 0
    )
