"""GET /jobs/{id}/events: a job's news as server-sent events, read from the database.

The stream polls every settings.sse_poll_seconds through a short session (no connection is held
between polls) and sends, in this order each time:
    status   (data: job)              first, then whenever status, progress or error change
    metrics  (data: {"points": [...]}) new metric points (replayed from since_step on connect)
    tree     (data: tree summary)     each new logged tree
    samples  (data: {"epoch": N})     each epoch whose gallery was (re)written
    end      (data: job)              once the job is no longer queued, running or cancelling
`: keep-alive` comments fill silences of settings.sse_keepalive_seconds, and the stream closes
after settings.sse_max_seconds (the client reconnects with since_step) so none lives forever.

Cursors are row ids: one trainer writes a job's rows, a step per transaction, so a job's ids
follow commit order and an id cursor neither skips nor repeats a row.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from backend import crud
from backend.api.problems import DATABASE_DOWN
from backend.models import ACTIVE_STATUSES, Job
from backend.schemas import job_public, tree_summary
from backend.settings import Settings

log = logging.getLogger("backend.api")

CHUNK = 1000  # metric points per `metrics` event
KEEPALIVE = b": keep-alive\n\n"


def sse(event: str, data: Any) -> bytes:
    """One event in the text/event-stream format; data is one line of JSON."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


@dataclass
class _Cursor:
    since_step: int | None
    started: bool = False
    job_key: tuple[Any, ...] | None = None
    metric_id: int = 0
    tree_id: int = 0
    sample_id: int = 0


def _job_key(job: Job) -> tuple[Any, ...]:
    return (
        job.status,
        job.progress_step,
        job.progress_total,
        job.error,
        job.checkpoint_path,
        job.worker,
        job.attempt,
    )


def _job_json(session: Session, job: Job) -> str:
    owner = crud.owner_name(session, owner_key_id=job.owner_key_id)
    return job_public(job, owner=owner).model_dump_json()


def _poll(factory: sessionmaker[Session], job_id: int, cursor: _Cursor) -> tuple[list[bytes], bool]:
    """One look at the database: the events since the cursor, and whether the stream ends."""
    out: list[bytes] = []
    with factory() as session:
        job = session.get(Job, job_id)
        if job is None:  # deleted underneath us: nothing more will come
            return [sse("end", {"id": job_id, "status": "deleted"})], True
        finished = job.status not in {s.value for s in ACTIVE_STATUSES}
        key = _job_key(job)
        if key != cursor.job_key:
            out.append(sse("status", _job_json(session, job)))
            cursor.job_key = key

        if not cursor.started:
            # Replay what exists (from since_step on), bounded by the ids seen now; later polls
            # take whatever comes after these bounds.
            metric_top = crud.max_metric_id(session, job_id=job_id)
            tree_top = crud.max_tree_id(session, job_id=job_id)
            sample_top = crud.max_sample_id(session, job_id=job_id)
            since = cursor.since_step
            while True:
                points = crud.metrics_after(
                    session,
                    job_id=job_id,
                    after_id=cursor.metric_id,
                    up_to_id=metric_top,
                    since_step=since,
                    limit=CHUNK,
                )
                if not points:
                    break
                out.append(_metrics_event(points))
                cursor.metric_id = points[-1].id
            cursor.metric_id = metric_top
            trees, _ = crud.list_trees(session, job_id=job_id, up_to_id=tree_top, limit=100_000)
            out.extend(
                sse("tree", tree_summary(item).model_dump_json())
                for item in trees
                if since is None or item["tree"].epoch > since
            )
            cursor.tree_id = tree_top
            epochs, _ = crud.sample_epochs_after(
                session, job_id=job_id, after_id=0, up_to_id=sample_top
            )
            out.extend(sse("samples", {"epoch": e}) for e in epochs if since is None or e > since)
            cursor.sample_id = sample_top
            cursor.started = True
        else:
            while True:
                points = crud.metrics_after(
                    session, job_id=job_id, after_id=cursor.metric_id, limit=CHUNK
                )
                if points:
                    out.append(_metrics_event(points))
                    cursor.metric_id = points[-1].id
                if len(points) < CHUNK:
                    break
            trees, _ = crud.list_trees(
                session, job_id=job_id, after_id=cursor.tree_id, limit=100_000
            )
            for item in trees:
                out.append(sse("tree", tree_summary(item).model_dump_json()))
                cursor.tree_id = max(cursor.tree_id, item["tree"].id)
            epochs, cursor.sample_id = crud.sample_epochs_after(
                session, job_id=job_id, after_id=cursor.sample_id
            )
            out.extend(sse("samples", {"epoch": e}) for e in epochs)

        if finished:
            # Everything the job wrote before finishing was read above: the stream is complete.
            out.append(sse("end", _job_json(session, job)))
    return out, finished


def _metrics_event(points: list[Any]) -> bytes:
    return sse(
        "metrics",
        {"points": [{"step": p.step, "name": p.name, "value": p.value} for p in points]},
    )


async def job_events(
    *,
    factory: sessionmaker[Session],
    settings: Settings,
    job_id: int,
    since_step: int | None,
    is_disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    cursor = _Cursor(since_step=since_step)
    opened = time.monotonic()
    last_sent = opened
    delay = settings.sse_poll_seconds
    while True:
        try:
            chunks, finished = await run_in_threadpool(_poll, factory, job_id, cursor)
            delay = settings.sse_poll_seconds
        except DATABASE_DOWN as exc:
            log.warning("events for job %s: database unavailable: %s", job_id, exc)
            chunks, finished = [b": database unavailable, retrying\n\n"], False
            delay = min(max(delay * 2, settings.sse_poll_seconds), 10.0)
        for chunk in chunks:
            yield chunk
        now = time.monotonic()
        if chunks:
            last_sent = now
        if finished:
            return
        if now - opened >= settings.sse_max_seconds:
            return
        if now - last_sent >= settings.sse_keepalive_seconds:
            yield KEEPALIVE
            last_sent = now
        await anyio.sleep(delay)
        if await is_disconnected():
            return
