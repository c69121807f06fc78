"""/jobs: create, list, read, cancel, resume; a job's metrics, events, logs, trees, samples and
checkpoint."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from backend import crud, storage
from backend.api import events, files, submission
from backend.api.deps import ReadKey, SessionDep, SettingsDep, WriteKey
from backend.api.problems import ProblemError, problem_responses
from backend.db import session_factory
from backend.models import NAME_CHARS
from backend.schemas import (
    MAX_ID,
    MAX_INT,
    MIN_INT,
    NO_NUL_PATTERN,
    JobCreate,
    JobKindName,
    JobPublic,
    JobsPublic,
    JobStatusName,
    MetricPoint,
    MetricsPublic,
    SamplesPublic,
    TreesPublic,
    job_public,
    sample_public,
    tree_summary,
)

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="The job's id.")]
Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=MAX_INT, description="Rows to skip.")]
Epoch = Annotated[int | None, Query(ge=0, le=MAX_INT, description="Only this epoch.")]


def _latest_reward(session: Any, job_id: int) -> float | None:
    return crud.latest_values(session, job_ids=[job_id], name="reward_mean").get(job_id)


@router.post(
    "",
    status_code=201,
    response_model=JobPublic,
    summary="Create a job",
    responses={
        200: {"description": "The job an earlier request with this Idempotency-Key created."},
        **problem_responses(401, 409, 413, 503),
    },
)
def create_job(
    body: JobCreate,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    _key: WriteKey,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=NAME_CHARS,
            description="Retries with the same key and body return the same job (200); "
            "another body with the key is a 409.",
        ),
    ] = None,
) -> JobPublic:
    """Validate the whole config (preset + overrides), freeze it in a new `queued` job and send
    the job to the workers. A bad setting is a 422 whose `loc` is ["body", "config", field]."""
    job, created = submission.create(
        session, settings=settings, body=body, idempotency_key=idempotency_key
    )
    if not created:
        response.status_code = 200
    return job_public(job, None if created else _latest_reward(session, job.id))


@router.get("", response_model=JobsPublic, summary="List jobs, newest first")
def list_jobs(
    session: SessionDep,
    _key: ReadKey,
    status: Annotated[list[JobStatusName] | None, Query(description="Any of these.")] = None,
    kind: Annotated[list[JobKindName] | None, Query(description="Any of these.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> JobsPublic:
    jobs, count = crud.list_jobs(
        session, statuses=status or (), kinds=kind or (), limit=limit, offset=offset
    )
    rewards = crud.latest_values(session, job_ids=[job.id for job in jobs], name="reward_mean")
    return JobsPublic(data=[job_public(job, rewards.get(job.id)) for job in jobs], count=count)


@router.get(
    "/{job_id}", response_model=JobPublic, responses=problem_responses(404), summary="One job"
)
def get_job(job_id: JobId, session: SessionDep, _key: ReadKey) -> JobPublic:
    job = crud.get_job(session, job_id=job_id)
    return job_public(job, _latest_reward(session, job.id))


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    responses=problem_responses(401, 404, 409),
    summary="Request a stop",
)
def cancel_job(job_id: JobId, session: SessionDep, _key: WriteKey) -> JobPublic:
    """queued -> cancelled at once; running -> cancelling (the worker checkpoints and stops);
    a cancelling job is answered as it is; any other state is a 409."""
    job = crud.request_cancel(session, job_id=job_id)
    return job_public(job, _latest_reward(session, job.id))


@router.post(
    "/{job_id}/resume",
    response_model=JobPublic,
    responses=problem_responses(401, 404, 409, 503),
    summary="Queue a stopped job again",
)
def resume_job(
    job_id: JobId, session: SessionDep, settings: SettingsDep, _key: WriteKey
) -> JobPublic:
    """interrupted | failed | cancelled | lost -> queued; the worker continues from the job's
    last checkpoint (or starts over without one). Any other state is a 409."""
    job = crud.request_resume(session, job_id=job_id)
    submission.enqueue_or_fail(session, settings=settings, job=job)
    return job_public(job, _latest_reward(session, job.id))


@router.get(
    "/{job_id}/metrics",
    response_model=MetricsPublic,
    responses=problem_responses(404),
    summary="Metric points",
)
def get_metrics(
    job_id: JobId,
    session: SessionDep,
    _key: ReadKey,
    name: Annotated[
        list[Annotated[str, Query(max_length=NAME_CHARS, pattern=NO_NUL_PATTERN)]] | None,
        Query(description="Only these metric names."),
    ] = None,
    since_step: Annotated[
        int | None, Query(ge=MIN_INT, le=MAX_INT, description="Only steps after this one.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> MetricsPublic:
    crud.get_job(session, job_id=job_id)
    names = name or ()
    points = crud.list_metrics(
        session, job_id=job_id, names=names, since_step=since_step, limit=limit
    )
    count = crud.count_metrics(session, job_id=job_id, names=names, since_step=since_step)
    return MetricsPublic(
        data=[MetricPoint(step=p.step, name=p.name, value=p.value) for p in points],
        count=count,
        names=crud.metric_names(session, job_id=job_id),
    )


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-sent events: status, metrics, tree, samples, end.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problem_responses(404),
    },
    summary="Follow a job (server-sent events)",
)
async def job_events(
    job_id: JobId,
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    _key: ReadKey,
    since_step: Annotated[
        int | None,
        Query(
            ge=MIN_INT,
            le=MAX_INT,
            description="Replay only metric points, trees and samples after this step "
            "(a reconnecting client passes the last step it has); default: everything.",
        ),
    ] = None,
) -> StreamingResponse:
    from starlette.concurrency import run_in_threadpool

    await run_in_threadpool(crud.get_job, session, job_id=job_id)
    await run_in_threadpool(session.close)
    stream = events.job_events(
        factory=session_factory(settings.resolved_database_url),
        settings=settings,
        job_id=job_id,
        since_step=since_step,
        is_disconnected=request.is_disconnected,
    )
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{job_id}/logs",
    response_class=Response,
    responses={
        200: {
            "description": "The log's bytes from `offset`; header X-Next-Offset says where to "
            "continue.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **problem_responses(404),
    },
    summary="The job's log",
)
def job_logs(
    job_id: JobId,
    session: SessionDep,
    settings: SettingsDep,
    _key: ReadKey,
    offset: Annotated[int, Query(ge=0, le=2**62, description="Byte offset to start at.")] = 0,
    limit: Annotated[
        int, Query(ge=1, le=8 * 1024 * 1024, description="Most bytes to return.")
    ] = 1024 * 1024,
) -> Response:
    crud.get_job(session, job_id=job_id)
    session.close()
    try:
        path = storage.resolve_inside(settings.resolved_artifact_dir, storage.log_relpath(job_id))
        chunk = files.read_chunk(path, offset, limit)
    except storage.OutsideStore:
        chunk = b""
    return Response(
        chunk,
        media_type="text/plain; charset=utf-8",
        headers={"X-Next-Offset": str(offset + len(chunk)), **files.SAFE_HEADERS},
    )


@router.get(
    "/{job_id}/trees",
    response_model=TreesPublic,
    responses=problem_responses(404),
    summary="Logged trees",
)
def job_trees(
    job_id: JobId,
    session: SessionDep,
    _key: ReadKey,
    epoch: Epoch = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> TreesPublic:
    crud.get_job(session, job_id=job_id)
    items, count = crud.list_trees(session, job_id=job_id, epoch=epoch, limit=limit, offset=offset)
    return TreesPublic(data=[tree_summary(item) for item in items], count=count)


@router.get(
    "/{job_id}/samples",
    response_model=SamplesPublic,
    responses=problem_responses(404),
    summary="Gallery items per epoch",
)
def job_samples(
    job_id: JobId,
    session: SessionDep,
    _key: ReadKey,
    epoch: Epoch = None,
    limit: Limit = 200,
    offset: Offset = 0,
) -> SamplesPublic:
    crud.get_job(session, job_id=job_id)
    rows, count = crud.list_samples(session, job_id=job_id, epoch=epoch, limit=limit, offset=offset)
    return SamplesPublic(
        data=[sample_public(row) for row in rows],
        count=count,
        epochs=crud.sample_epochs(session, job_id=job_id),
    )


@router.get(
    "/{job_id}/checkpoint",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The latest checkpoint as a zip.",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        },
        **problem_responses(404),
    },
    summary="Download the latest checkpoint",
)
def job_checkpoint(
    job_id: JobId, session: SessionDep, settings: SettingsDep, _key: ReadKey
) -> StreamingResponse:
    job = crud.get_job(session, job_id=job_id)
    session.close()
    missing = ProblemError(404, f"job {job_id} has no checkpoint", kind="not-found")
    if not job.checkpoint_path:
        raise missing
    try:
        entries = files.checkpoint_files(settings.resolved_artifact_dir, job.checkpoint_path)
    except (storage.OutsideStore, OSError) as exc:
        raise missing from exc
    if not entries:
        raise missing
    name = job.checkpoint_path.rstrip("/").rsplit("/", 1)[-1] or "checkpoint"
    return StreamingResponse(
        files.zip_stream(entries),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="job-{job_id}-{_ascii(name)}.zip"',
            "X-Content-Type-Options": "nosniff",
        },
    )


def _ascii(name: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
