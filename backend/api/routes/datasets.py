"""/datasets: prompt datasets (treegrpo/datasets/). Import from an allowed path or a cached hub
id, or upload a file (streamed to disk under a size limit, never held in memory); list, show and
preview with search; delete while no job reads it (409 otherwise).

Roles as for runs (backend/access.py): reads need what every read needs, an import needs a
member, a delete the importer (or an admin).
"""

from __future__ import annotations

import shutil
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from backend import crud
from backend import datasets as service
from backend.access import may_manage
from backend.api.audit_trail import audit
from backend.api.deps import DbDep, ReadKey, SettingsDep, StoreDep, WriteKey
from backend.api.problems import ProblemError, problem_responses, validation_error
from backend.dataset_schemas import (
    DatasetImport,
    DatasetName,
    DatasetPublic,
    DatasetRow,
    DatasetRows,
    DatasetsPublic,
    ImportProgressPublic,
    ProgressId,
    SplitName,
)
from backend.errors import Forbidden
from backend.import_progress import ImportBoard
from backend.models import Dataset, KeyRole
from treegrpo.datasets.errors import DatasetError
from treegrpo.errors import ConfigError

router = APIRouter(prefix="/datasets", tags=["datasets"])

DatasetId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The dataset's id.")]
UPLOAD_PATH = "/datasets/upload"


def public(row: Dataset, used_by: list[int] | None = None) -> DatasetPublic:
    return DatasetPublic(
        id=row.id,
        name=row.name,
        sha256=row.sha256,
        rows=row.rows,
        bytes=row.bytes,
        splits=dict(row.splits),
        columns=list(row.columns),
        source=dict(row.source),
        created_at=row.created_at,
        owner_key_id=row.owner_key_id,
        used_by=used_by or [],
    )


def _bad_input(exc: DatasetError | ConfigError, field: str) -> Exception:
    if isinstance(exc, ConfigError):
        return validation_error(("body", exc.field), exc.reason, "file_rule")
    return validation_error(("body", field), str(exc), "dataset_error")


@router.get("", response_model=DatasetsPublic, responses=problem_responses(401))
async def list_datasets(
    db: DbDep,
    _reader: ReadKey,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> DatasetsPublic:
    """Every dataset version, newest first, with the jobs that read each."""

    def work(session: Session) -> DatasetsPublic:
        rows, total = crud.list_datasets(session, limit=limit, offset=offset)
        users = crud.jobs_using(session, dataset_ids=[r.id for r in rows])
        return DatasetsPublic(data=[public(r, users[r.id]) for r in rows], count=total)

    return await db.read(work)


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    responses=problem_responses(401, 403),
    summary="Import from an allowed path or the local Hugging Face cache",
)
async def import_dataset(
    body: DatasetImport, db: DbDep, settings: SettingsDep, store: StoreDep, caller: WriteKey
) -> DatasetPublic:
    """A 422 names the row of bad input (an empty file, a missing prompt column, an over-long
    prompt, undecodable text, a binary file); nothing is listed unless the import finished."""

    def work(session: Session) -> DatasetPublic:
        with ImportBoard(db.url).track(body.progress_id) as report:
            try:
                row, _ = service.import_dataset(
                    session,
                    settings=settings,
                    store=store,
                    name=body.name,
                    path=body.path,
                    hub=body.hub,
                    split=body.split,
                    prompt_column=body.prompt_column,
                    owner_key_id=caller.key_id,
                    report=report,
                )
            except (DatasetError, ConfigError) as exc:
                raise _bad_input(exc, "path" if body.path is not None else "hub") from None
        source = body.path if body.path is not None else body.hub
        audit(session, caller, "dataset.import", "dataset", row.id, name=row.name, source=source)
        return public(row)

    return await db.run(work)


@router.post(
    "/upload",
    status_code=201,
    response_model=DatasetPublic,
    responses=problem_responses(401, 403, 413),
    summary="Upload a file (the request body, any content type)",
)
async def upload_dataset(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    store: StoreDep,
    caller: WriteKey,
    name: Annotated[DatasetName, Query(description="What configs call it.")],
    filename: Annotated[
        str,
        Query(
            max_length=200,
            pattern=r"^[^/\\]+\.(txt|jsonl|ndjson|csv|parquet)$",
            description="Its file name: the suffix says the format.",
        ),
    ],
    split: Annotated[SplitName, Query()] = "train",
    prompt_column: Annotated[str, Query(min_length=1, max_length=200)] = "prompt",
    progress_id: Annotated[
        ProgressId | None,
        Query(description="Follow the import at GET /datasets/imports/{progress_id}."),
    ] = None,
) -> DatasetPublic:
    """The body is streamed to a private temporary file, never held in memory; past
    TREEGRPO_MAX_DATASET_BYTES the upload stops with a 413 and the file is removed."""
    limit = settings.max_dataset_bytes
    work_dir = service.work_folder(settings)
    try:
        path = work_dir / "upload"
        size = 0
        with path.open("wb") as handle:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ProblemError(
                        413, f"the upload is larger than {limit} bytes", kind="too-large"
                    )
                await run_in_threadpool(handle.write, chunk)

        def work(session: Session) -> DatasetPublic:
            with ImportBoard(db.url).track(progress_id) as report:
                try:
                    row, _ = service.import_upload(
                        session,
                        settings=settings,
                        store=store,
                        name=name,
                        file=path,
                        filename=filename,
                        split=split,
                        prompt_column=prompt_column,
                        owner_key_id=caller.key_id,
                        report=report,
                    )
                except DatasetError as exc:
                    raise validation_error(("body",), str(exc), "dataset_error") from None
            audit(
                session, caller, "dataset.upload", "dataset", row.id,
                name=row.name, filename=filename, bytes=size,
            )  # fmt: skip
            return public(row)

        return await db.run(work)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


@router.get(
    "/imports/{progress_id}",
    response_model=ImportProgressPublic,
    responses=problem_responses(401, 404),
    summary="How far a running import has got",
)
async def import_progress(
    progress_id: ProgressId, db: DbDep, _reader: ReadKey
) -> ImportProgressPublic:
    """An import sent with `progress_id`, while its request runs (in this API process or any
    other): the phase (`reading` the source, `storing` the version) and its bytes done of the
    total. A 404 before it started and once it ended."""
    item = await db.read(lambda session: crud.import_progress(session, progress_id=progress_id))
    if item is None:
        raise ProblemError(404, f"no import {progress_id!r} is running")
    return ImportProgressPublic(**item)


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=problem_responses(401, 404))
async def get_dataset(dataset_id: DatasetId, db: DbDep, _reader: ReadKey) -> DatasetPublic:
    def work(session: Session) -> DatasetPublic:
        row = crud.get_dataset(session, dataset_id=dataset_id)
        return public(row, crud.jobs_using(session, dataset_ids=[row.id])[row.id])

    return await db.read(work)


@router.get("/{dataset_id}/rows", response_model=DatasetRows, responses=problem_responses(401, 404))
async def preview(
    dataset_id: DatasetId,
    db: DbDep,
    settings: SettingsDep,
    store: StoreDep,
    _reader: ReadKey,
    split: Annotated[SplitName | None, Query(description="Default: train, else the first.")] = None,
    q: Annotated[str, Query(max_length=200, description="Prompts holding this text.")] = "",
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> DatasetRows:
    """Rows of a split (memory-mapped, a row group at a time), optionally searched."""
    row = await db.read(lambda session: crud.get_dataset(session, dataset_id=dataset_id))
    chosen = split or ("train" if "train" in row.splits else sorted(row.splits)[0])
    if chosen not in row.splits:
        raise ProblemError(
            404, f"dataset {row.id} has no split {chosen!r}: {', '.join(sorted(row.splits))}"
        )

    def read() -> DatasetRows:
        from treegrpo.datasets.table import open_split

        try:
            folder = service.local_version(store, settings, row.sha256)
        except DatasetError as exc:
            raise ProblemError(404, str(exc)) from None
        found, total = open_split(folder, chosen).search(q, offset, limit)
        return DatasetRows(split=chosen, data=[DatasetRow(**item) for item in found], count=total)

    return await run_in_threadpool(read)


@router.delete(
    "/{dataset_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 409),
)
async def delete_dataset(
    dataset_id: DatasetId, db: DbDep, settings: SettingsDep, store: StoreDep, caller: WriteKey
) -> Response:
    """Refused (409, naming them) while a job reads it; its files go with its last row."""

    def work(session: Session) -> str | None:
        row = crud.get_dataset(session, dataset_id=dataset_id)
        if not may_manage(caller, row.owner_key_id):
            raise Forbidden(
                f"deleting dataset {dataset_id} needs the admin role: a member deletes only the "
                "datasets its own key imported",
                needed=KeyRole.admin.value,
            )
        sha, name = row.sha256, row.name
        last = crud.delete_dataset(session, dataset_id=dataset_id)
        audit(session, caller, "dataset.delete", "dataset", dataset_id, name=name)
        return sha if last else None

    sha = await db.run(work)
    if sha is not None:
        await run_in_threadpool(service.remove_files, store, settings, sha)
    return Response(status_code=204)
