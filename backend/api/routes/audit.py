"""/audit: who changed what and when (admins only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from backend import crud
from backend.api.deps import AdminKey, DbDep
from backend.api.problems import problem_responses
from backend.schemas import MAX_ID, MAX_INT, NO_NUL_PATTERN, AuditEntryPublic, AuditPublic

router = APIRouter(tags=["access"])


@router.get(
    "/audit",
    response_model=AuditPublic,
    responses=problem_responses(401, 403),
    summary="The audit log, newest first",
)
async def audit_log(
    db: DbDep,
    _admin: AdminKey,
    key_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Only what this key did.")
    ] = None,
    action: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=NO_NUL_PATTERN,
            description="Only this action (job.submit, job.cancel, key.create, ...).",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_INT, description="Rows to skip.")] = 0,
) -> AuditPublic:
    """Every mutation made through the API (submit, edit, cancel, resume, delete, branch) and
    every key or secret change made with the `treegrpo` command on the server."""

    def work(session: Session) -> AuditPublic:
        rows, count = crud.list_audit(
            session, key_id=key_id, action=action, limit=limit, offset=offset
        )
        return AuditPublic(
            data=[AuditEntryPublic.model_validate(row, from_attributes=True) for row in rows],
            count=count,
        )

    return await db.read(work)
