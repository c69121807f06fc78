"""/jobs: create, list, read, cancel, resume, delete and restore; a job's metrics, events, logs, trees, samples,
checkpoint and export."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path as PathType
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import iterate_in_threadpool

from backend import access, crud, storage
from backend.access import Caller
from backend.api import answers, audit_trail, events, files, nesting, submission
from backend.api.deps import Database, DbDep, ReadKey, SettingsDep, StoreDep, WriteKey
from backend.api.problems import ProblemError, problem_responses
from backend.artifact_store import ArtifactStore, check_key
from backend.errors import NotFound
from backend.models import NAME_CHARS, Job
from backend.schemas import (
    MAX_ID,
    MAX_INT,
    MIN_INT,
    NO_NUL_PATTERN,
    DeletedJobPublic,
    DeletedJobsPublic,
    JobCreate,
    JobKindName,
    JobPublic,
    JobsPublic,
    JobStatusName,
    JobUpdate,
    MetricsPublic,
    SamplesPublic,
    TreesPublic,
    job_fields,
    job_public,
    logging_schedule,
    node_fields,
    sample_public,
    tree_summary,
)
from backend.settings import Settings
from treegrpo.secrets import redact

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="The job's id.")]
Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=MAX_INT, description="Rows to skip.")]
Epoch = Annotated[int | None, Query(ge=0, le=MAX_INT, description="Only this epoch.")]


def _job_body(
    job: Job,
    queue_position: int | None,
    owner: str | None,
    nodes: list[dict[str, Any]] | None = None,
) -> bytes:
    """An ORM job (fresh from a write) as the same JSON bytes GET /jobs/{id} gives."""
    row = {column.name: getattr(job, column.name) for column in Job.__table__.c}
    row["owner"] = owner
    return answers.encode(
        {
            **job_fields(row, queue_position),
            "config": redact(job.config),
            "schedule": logging_schedule(row, job.config),
            "nodes": nodes or [],
        }
    )


def _position(session: Session, job: Job) -> int | None:
    if job.status != "queued":
        return None
    return crud.queue_positions(session, job_ids=[job.id]).get(job.id)


def job_answer(session: Session, job: Job) -> JobPublic:
    """A job fresh from a write, with its queue position, owner (and a multi-node job's
    machines)."""
    owner = crud.owner_name(session, owner_key_id=job.owner_key_id)
    nodes = node_fields(crud.list_nodes(session, job_id=job.id))
    return job_public(job, _position(session, job), owner, nodes)


def audit(session: Session, caller: Caller, action: str, job_id: int, **detail: object) -> None:
    """One audit entry for a change the caller made to a job."""
    audit_trail.audit(session, caller, action, "job", job_id, **detail)


def managed_job(session: Session, caller: Caller, job_id: int, action: str) -> Job:
    """The job, once the caller may change it (404 if there is none, 403 if it is another
    key's and the caller is no admin)."""
    job = crud.get_job(session, job_id=job_id)
    access.require_manage(caller, job_id=job_id, owner_key_id=job.owner_key_id, action=action)
    return job


@router.post(
    "",
    status_code=201,
    response_model=JobPublic,
    summary="Create a job",
    responses={
        200: {"description": "The job an earlier request with this Idempotency-Key created."},
        **problem_responses(401, 403, 409, 413, 429, 503),
    },
)
async def create_job(
    body: JobCreate,
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    caller: WriteKey,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=NAME_CHARS,
            description="Retries with the same key and body return the same job (200); "
            "another body with the key is a 409. Scoped to the caller's API key: another key's "
            "use of the same string is a different request.",
        ),
    ] = None,
) -> Response:
    """Validate the whole config (preset + overrides), freeze it in a new `queued` job owned by
    the caller's key and send the job to the workers. A bad setting is a 422 whose `loc` is
    ["body", "config", field]. Needs a member or admin key; a key with
    TREEGRPO_MAX_QUEUED_PER_KEY jobs queued already gets a 429 with Retry-After."""
    nesting.check_job_request(body)

    def work(session: Session) -> tuple[bytes, bool]:
        job, created = submission.create(
            session,
            settings=settings,
            body=body,
            idempotency_key=idempotency_key,
            owner_key_id=caller.key_id,
        )
        if created:
            audit(session, caller, "job.submit", job.id, kind=job.kind, preset=job.preset)
        nodes = node_fields(crud.list_nodes(session, job_id=job.id))  # an idempotent replay
        return _job_body(job, _position(session, job), caller.name, nodes), created

    content, created = await db.run(work)
    return answers.answer(request, content, status_code=201 if created else 200)


@router.get("", response_model=JobsPublic, summary="List jobs, newest first")
async def list_jobs(
    request: Request,
    db: DbDep,
    _key: ReadKey,
    status: Annotated[list[JobStatusName] | None, Query(description="Any of these.")] = None,
    kind: Annotated[list[JobKindName] | None, Query(description="Any of these.")] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=NAME_CHARS,
            pattern=NO_NUL_PATTERN,
            description="A part of the name (case-insensitive).",
        ),
    ] = None,
    tag: Annotated[
        list[Annotated[str, Query(max_length=50, pattern=NO_NUL_PATTERN)]] | None,
        Query(description="Jobs with every one of these tags."),
    ] = None,
    preset: Annotated[
        list[Annotated[str, Query(max_length=NAME_CHARS, pattern=NO_NUL_PATTERN)]] | None,
        Query(description="Any of these presets."),
    ] = None,
    algorithm: Annotated[
        list[Annotated[str, Query(max_length=32, pattern=NO_NUL_PATTERN)]] | None,
        Query(description="Any of these algorithms."),
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Response:
    """Each item is a job without its config (GET /jobs/{id} has it). Deleted jobs are left
    out; filters combine with AND."""
    where = crud.JobFilter(
        statuses=tuple(status or ()),
        kinds=tuple(kind or ()),
        presets=tuple(preset or ()),
        algorithms=tuple(algorithm or ()),
        tags=tuple(dict.fromkeys(tag or ())),
        q=q or None,
    )

    def work(session: Session) -> bytes:
        rows, count = crud.job_page(session, where=where, limit=limit, offset=offset)
        queued = [row["id"] for row in rows if row["status"] == "queued"]
        positions = crud.queue_positions(session, job_ids=queued) if queued else {}
        return answers.encode(
            {"data": [job_fields(row, positions.get(row["id"])) for row in rows], "count": count}
        )

    return answers.answer(request, await db.read(work))


@router.get("/deleted", response_model=DeletedJobsPublic, summary="Recently deleted jobs")
async def deleted_jobs(
    db: DbDep, settings: SettingsDep, _key: ReadKey, limit: Limit = 50
) -> DeletedJobsPublic:
    """Deleted jobs whose artifacts are still there, the latest deleted first: each can be
    restored until `purge_after` (TREEGRPO_DELETE_GRACE_SECONDS after its delete)."""
    grace = timedelta(seconds=settings.delete_grace_seconds)

    def work(session: Session) -> DeletedJobsPublic:
        rows, count = crud.recently_deleted(session, limit=limit)
        return DeletedJobsPublic(data=[_deleted(job, grace) for job in rows], count=count)

    return await db.read(work)


def _deleted(job: Job, grace: timedelta) -> DeletedJobPublic:
    deleted_at = job.deleted_at
    assert deleted_at is not None  # crud.recently_deleted lists deleted jobs only
    return DeletedJobPublic(
        id=job.id,
        kind=job.kind,
        name=job.name,
        status=job.status,  # type: ignore[arg-type]
        algorithm=job.algorithm,
        owner_key_id=job.owner_key_id,
        deleted_at=deleted_at,
        purge_after=deleted_at + grace,
    )


@router.get(
    "/{job_id}", response_model=JobPublic, responses=problem_responses(404), summary="One job"
)
async def get_job(job_id: JobId, request: Request, db: DbDep, _key: ReadKey) -> Response:
    """With an ETag; If-None-Match with it answers 304 without a body."""

    def work(session: Session) -> bytes:
        rows = crud.job_rows(session, job_ids=[job_id], with_config=True)
        if not rows:
            raise NotFound("job", job_id)
        row = rows[0]
        position = None
        if row["status"] == "queued":
            position = crud.queue_positions(session, job_ids=[job_id]).get(job_id)
        nodes = node_fields(crud.list_nodes(session, job_id=job_id))
        return answers.job_body(row, position, nodes)

    return answers.answer(request, await db.read(work))


@router.patch(
    "/{job_id}",
    response_model=JobPublic,
    responses=problem_responses(401, 403, 404),
    summary="Rename, tag or annotate a job",
)
async def update_job(job_id: JobId, body: JobUpdate, db: DbDep, caller: WriteKey) -> JobPublic:
    """Any of name, tags (replaces the list) and notes; a field left out keeps its value. A
    member may change only its own jobs."""

    def work(session: Session) -> JobPublic:
        managed_job(session, caller, job_id, "editing")
        job = crud.update_job(
            session, job_id=job_id, name=body.name, tags=body.tags, notes=body.notes
        )
        changed = body.model_dump(exclude_none=True)
        if "notes" in changed:  # free text: the log says that it changed, not what it says
            changed["notes"] = f"{len(changed['notes'])} characters"
        audit(session, caller, "job.update", job_id, **changed)
        return job_answer(session, job)

    return await db.run(work)


@router.delete(
    "/{job_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 409),
    summary="Delete a job",
)
async def delete_job(job_id: JobId, db: DbDep, settings: SettingsDep, caller: WriteKey) -> Response:
    """Soft delete: the job leaves every listing and answers 404 from now on. It stays
    restorable (POST /jobs/{id}/restore; GET /jobs/deleted lists it) for
    TREEGRPO_DELETE_GRACE_SECONDS (a day by default), then a worker purges its artifacts; with
    0 they are purged at once. A queued, running or cancelling job is a 409 (cancel it first).
    A member may delete only its own jobs."""

    def work(session: Session) -> None:
        managed_job(session, caller, job_id, "deleting")
        crud.soft_delete_job(session, job_id=job_id)
        audit(session, caller, "job.delete", job_id)
        if settings.delete_grace_seconds <= 0:
            submission.purge_or_log(job_id, settings=settings)

    await db.run(work)
    return Response(status_code=204)


@router.post(
    "/{job_id}/restore",
    response_model=JobPublic,
    responses=problem_responses(401, 403, 404, 409),
    summary="Undo a delete",
)
async def restore_job(job_id: JobId, db: DbDep, caller: WriteKey) -> JobPublic:
    """A deleted job comes back, as it was, until its artifacts are purged (then 409). 404 for
    an unknown job or one that is not deleted. Who may delete a job may restore it."""

    def work(session: Session) -> JobPublic:
        job = crud.deleted_job(session, job_id=job_id)
        access.require_manage(
            caller, job_id=job_id, owner_key_id=job.owner_key_id, action="restoring"
        )
        crud.restore_job(session, job_id=job_id)
        audit(session, caller, "job.restore", job_id)
        return job_answer(session, crud.get_job(session, job_id=job_id))

    return await db.run(work)


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    responses=problem_responses(401, 403, 404, 409),
    summary="Request a stop",
)
async def cancel_job(job_id: JobId, db: DbDep, caller: WriteKey) -> JobPublic:
    """queued -> cancelled at once; running -> cancelling (the worker checkpoints and stops);
    a cancelling job is answered as it is; any other state is a 409. A member may cancel only
    its own jobs."""

    def work(session: Session) -> JobPublic:
        managed_job(session, caller, job_id, "cancelling")
        job = crud.request_cancel(session, job_id=job_id)
        audit(session, caller, "job.cancel", job_id, status=job.status)
        return job_answer(session, job)

    return await db.run(work)


@router.post(
    "/{job_id}/resume",
    response_model=JobPublic,
    responses=problem_responses(401, 403, 404, 409, 503),
    summary="Queue a stopped job again",
)
async def resume_job(
    job_id: JobId, db: DbDep, settings: SettingsDep, caller: WriteKey
) -> JobPublic:
    """interrupted | failed | cancelled | lost -> queued; the worker continues from the job's
    last checkpoint (or starts over without one). Any other state is a 409. A member may resume
    only its own jobs."""

    def work(session: Session) -> JobPublic:
        managed_job(session, caller, job_id, "resuming")
        job = crud.request_resume(session, job_id=job_id)
        audit(session, caller, "job.resume", job_id)
        submission.enqueue_or_fail(session, settings=settings, job=job)
        return job_answer(session, job)

    return await db.run(work)


@router.get(
    "/{job_id}/metrics",
    response_model=MetricsPublic,
    responses=problem_responses(404),
    summary="Metric points",
)
async def get_metrics(
    job_id: JobId,
    request: Request,
    db: DbDep,
    _key: ReadKey,
    name: Annotated[
        list[Annotated[str, Query(max_length=NAME_CHARS, pattern=NO_NUL_PATTERN)]] | None,
        Query(description="Only these metric names."),
    ] = None,
    since_step: Annotated[
        int | None, Query(ge=MIN_INT, le=MAX_INT, description="Only steps after this one.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> Response:
    """With an ETag; If-None-Match with it answers 304 without a body."""
    names = name or ()

    def work(session: Session) -> bytes:
        crud.get_job(session, job_id=job_id)
        points = crud.list_metrics(
            session, job_id=job_id, names=names, since_step=since_step, limit=limit
        )
        return answers.encode(
            {
                "data": [{"step": p.step, "name": p.name, "value": p.value} for p in points],
                "count": crud.count_metrics(
                    session, job_id=job_id, names=names, since_step=since_step
                ),
                "names": crud.metric_names(session, job_id=job_id),
            }
        )

    return answers.answer(request, await db.read(work))


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
    db: DbDep,
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
    await db.run(lambda session: crud.get_job(session, job_id=job_id))  # 404 before streaming
    stream = events.job_events(
        factory=db.factory,
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
async def job_logs(
    job_id: JobId,
    db: DbDep,
    settings: SettingsDep,
    store: StoreDep,
    _key: ReadKey,
    offset: Annotated[int, Query(ge=0, le=2**62, description="Byte offset to start at.")] = 0,
    limit: Annotated[
        int, Query(ge=1, le=8 * 1024 * 1024, description="Most bytes to return.")
    ] = 1024 * 1024,
) -> Response:

    def work(session: Session) -> bytes:
        crud.get_job(session, job_id=job_id)
        if store.remote:
            return store.read_range(storage.log_relpath(job_id), offset, limit)
        root = settings.resolved_artifact_dir
        try:
            path = storage.resolve_inside(root, storage.log_relpath(job_id))
        except storage.OutsideStore:
            return b""
        return files.read_chunk(path, offset, limit)

    chunk = await db.run(work)
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
async def job_trees(
    job_id: JobId,
    db: DbDep,
    _key: ReadKey,
    epoch: Epoch = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> TreesPublic:

    def work(session: Session) -> TreesPublic:
        crud.get_job(session, job_id=job_id)
        items, count = crud.list_trees(
            session, job_id=job_id, epoch=epoch, limit=limit, offset=offset
        )
        return TreesPublic(data=[tree_summary(item) for item in items], count=count)

    return await db.run(work)


@router.get(
    "/{job_id}/samples",
    response_model=SamplesPublic,
    responses=problem_responses(404),
    summary="Gallery items per epoch",
)
async def job_samples(
    job_id: JobId,
    db: DbDep,
    _key: ReadKey,
    epoch: Epoch = None,
    limit: Limit = 200,
    offset: Offset = 0,
) -> SamplesPublic:

    def work(session: Session) -> SamplesPublic:
        crud.get_job(session, job_id=job_id)
        rows, count = crud.list_samples(
            session, job_id=job_id, epoch=epoch, limit=limit, offset=offset
        )
        return SamplesPublic(
            data=[sample_public(row) for row in rows],
            count=count,
            epochs=crud.sample_epochs(session, job_id=job_id),
        )

    return await db.run(work)


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
async def job_checkpoint(
    job_id: JobId, db: DbDep, settings: SettingsDep, store: StoreDep, _key: ReadKey
) -> StreamingResponse:
    missing = ProblemError(404, f"job {job_id} has no checkpoint", kind="not-found")
    return await _checkpoint_zip(job_id, "", db, settings, store, missing, "")


# The LoRA export the trainer writes into each LoRA checkpoint (treegrpo.export.LORA_EXPORT_DIR;
# the API reads files only, so it never needs torch to export).
LORA_EXPORT_DIR = "lora"


@router.get(
    "/{job_id}/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The latest checkpoint's LoRA in diffusers' format, as a zip: "
            "pytorch_lora_weights.safetensors (for `pipe.load_lora_weights(folder)`) and a "
            "model card, README.md.",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        },
        **problem_responses(404),
    },
    summary="Download the trained weights for diffusers",
)
async def job_export(
    job_id: JobId,
    db: DbDep,
    settings: SettingsDep,
    store: StoreDep,
    _key: ReadKey,
    export_format: Annotated[
        Literal["lora"],
        Query(
            alias="format",
            description="lora: the diffusers LoRA of a LoRA run. A whole pipeline folder is "
            "built on a machine with the model: `treegrpo export JOB_ID --format pipeline`.",
        ),
    ] = "lora",
) -> StreamingResponse:
    missing = ProblemError(
        404,
        f"job {job_id} has no LoRA export: it has no checkpoint yet, or it is a full fine-tune "
        f"(export that as a pipeline: `treegrpo export {job_id} --format pipeline --out DIR`)",
        kind="not-found",
    )
    return await _checkpoint_zip(job_id, LORA_EXPORT_DIR, db, settings, store, missing, "-lora")


async def _checkpoint_zip(
    job_id: int,
    sub: str,
    db: Database,
    settings: Settings,
    store: ArtifactStore,
    missing: ProblemError,
    suffix: str,
) -> StreamingResponse:
    """The job's latest checkpoint folder (or its subfolder `sub`) as a streamed zip."""

    def latest(session: Session) -> str:
        relpath = crud.get_job(session, job_id=job_id).checkpoint_path
        if not relpath:
            raise missing
        return "/".join(part for part in (relpath.rstrip("/"), sub) if part)

    if store.remote:

        def remote(session: Session) -> str:
            relpath = latest(session)
            try:
                if not store.keys(check_key(relpath)):
                    raise missing
            except storage.OutsideStore as exc:
                raise missing from exc
            return relpath

        relpath = await db.run(remote)
        stream: AsyncIterator[bytes] | Iterator[bytes] = iterate_in_threadpool(
            files.store_zip_stream(store, relpath)
        )
        name = relpath.rsplit("/", 1)[-1] if not sub else relpath.rsplit("/", 2)[-2]
    else:

        def local(session: Session) -> tuple[str, list[tuple[PathType, str]]]:
            relpath = latest(session)
            try:
                entries = files.checkpoint_files(settings.resolved_artifact_dir, relpath)
            except (storage.OutsideStore, OSError) as exc:
                raise missing from exc
            if not entries:
                raise missing
            return relpath, entries

        relpath, entries = await db.run(local)
        stream = files.zip_stream(entries)
        parts = relpath.rstrip("/").split("/")
        name = (parts[-2] if sub and len(parts) > 1 else parts[-1]) or "checkpoint"
    return StreamingResponse(
        stream,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="job-{job_id}-{_ascii(name)}{suffix}.zip"',
            "X-Content-Type-Options": "nosniff",
        },
    )


def _ascii(name: str) -> str:
    return files.ascii_name(name)
