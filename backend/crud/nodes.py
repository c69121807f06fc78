"""The nodes of a multi-node attempt (`nodes > 1`): opening the gang, claiming a slot, heartbeats,
each node's end, and returning a gang that did not form to the queue (workers/gang.py).

Every transition is one conditional UPDATE, so two workers racing for a slot, or a slot and a
gang timeout, never both win.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session, aliased

from backend.models import Job, JobNode, JobStatus, utcnow

OPEN = "open"
CLAIMED = "claimed"
DONE = "done"
FAILED = "failed"
ABANDONED = "abandoned"
LIVE_JOB = (JobStatus.running.value, JobStatus.cancelling.value)


def open_nodes(
    session: Session, *, job_id: int, attempt: int, nodes: int, worker: str, host: str, port: int
) -> list[JobNode]:
    """Node 0 (this worker, hosting the rendezvous on host:port) and nodes - 1 open slots."""
    now = utcnow()
    rows = [
        JobNode(
            job_id=job_id,
            attempt=attempt,
            node_rank=0,
            status=CLAIMED,
            worker=worker,
            host=host,
            port=port,
            claimed_at=now,
            heartbeat_at=now,
        )
    ]
    rows += [
        JobNode(job_id=job_id, attempt=attempt, node_rank=rank, status=OPEN)
        for rank in range(1, nodes)
    ]
    session.add_all(rows)
    session.commit()
    return rows


def claim_node(
    session: Session, *, job_id: int, attempt: int, worker: str, host: str
) -> JobNode | None:
    """The lowest open slot of the attempt for `worker`, or None: the job is no longer running
    at that attempt, every slot is taken, or this worker is already in the gang (a node's
    processes must not share a worker's devices). A slot lost to a racing worker is retried."""
    gang = aliased(JobNode)
    job_live = exists().where(Job.id == job_id, Job.attempt == attempt, Job.status.in_(LIVE_JOB))
    worker_in_gang = exists().where(
        gang.job_id == job_id, gang.attempt == attempt, gang.worker == worker
    )
    while True:
        slot = session.scalar(
            select(func.min(JobNode.node_rank)).where(
                JobNode.job_id == job_id, JobNode.attempt == attempt, JobNode.status == OPEN
            )
        )
        if slot is None:
            return None
        now = utcnow()
        result = session.execute(
            update(JobNode)
            .where(
                JobNode.job_id == job_id,
                JobNode.attempt == attempt,
                JobNode.node_rank == slot,
                JobNode.status == OPEN,
                job_live,
                ~worker_in_gang,
            )
            .values(status=CLAIMED, worker=worker, host=host, claimed_at=now, heartbeat_at=now)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if result.rowcount == 1:  # type: ignore[attr-defined]
            return session.scalar(
                select(JobNode)
                .where(
                    JobNode.job_id == job_id, JobNode.attempt == attempt, JobNode.node_rank == slot
                )
                .execution_options(populate_existing=True)
            )
        if not session.scalar(select(job_live)) or session.scalar(select(worker_in_gang)):
            return None


def list_nodes(session: Session, *, job_id: int, attempt: int | None = None) -> Sequence[JobNode]:
    """The nodes of `attempt` (default: the job's latest attempt that has nodes), by rank."""
    if attempt is None:
        attempt = session.scalar(select(func.max(JobNode.attempt)).where(JobNode.job_id == job_id))
        if attempt is None:
            return []
    return session.scalars(
        select(JobNode)
        .where(JobNode.job_id == job_id, JobNode.attempt == attempt)
        .order_by(JobNode.node_rank)
        # The rows change by UPDATE statements: never hand back a stale copy of this session's.
        .execution_options(populate_existing=True)
    ).all()


def beat_node(session: Session, *, job_id: int, attempt: int, node_rank: int) -> bool:
    """Refresh a claimed node's heartbeat; False once the node has ended or was abandoned."""
    result = session.execute(
        update(JobNode)
        .where(
            JobNode.job_id == job_id,
            JobNode.attempt == attempt,
            JobNode.node_rank == node_rank,
            JobNode.status == CLAIMED,
        )
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def end_node(
    session: Session,
    *,
    job_id: int,
    attempt: int,
    node_rank: int,
    status: str,
    error: str | None = None,
) -> bool:
    """A claimed node -> done | failed (with the error its processes reported)."""
    if status not in (DONE, FAILED):
        raise ValueError(f"a node ends done or failed, not {status!r}")
    result = session.execute(
        update(JobNode)
        .where(
            JobNode.job_id == job_id,
            JobNode.attempt == attempt,
            JobNode.node_rank == node_rank,
            JobNode.status == CLAIMED,
        )
        .values(status=status, error=error, heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def gang_formed(session: Session, *, job_id: int, attempt: int) -> bool:
    """Whether every slot of the attempt is claimed (no open one left, none abandoned)."""
    waiting = session.scalar(
        select(func.count())
        .select_from(JobNode)
        .where(
            JobNode.job_id == job_id,
            JobNode.attempt == attempt,
            JobNode.status.in_([OPEN, ABANDONED]),
        )
    )
    return waiting == 0


def return_gang_to_queue(session: Session, *, job_id: int, attempt: int) -> bool:
    """A gang that did not form in time: running -> queued for that attempt (the next claim is
    a new attempt with a new rendezvous), and the attempt's slots abandoned, so the workers that
    claimed one let go. Returns whether the job went back (a cancel may have come first)."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.status == JobStatus.running.value)
        .values(status=JobStatus.queued.value, worker=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(JobNode)
        .where(
            and_(
                JobNode.job_id == job_id,
                JobNode.attempt == attempt,
                JobNode.status.in_([OPEN, CLAIMED]),
            )
        )
        .values(status=ABANDONED)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
