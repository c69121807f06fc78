"""/keys: an admin creates, lists and revokes API keys over HTTP, as `treegrpo api-key` does on
the server. Every change is in the audit log; a key's plaintext is in one answer only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from sqlalchemy.orm import Session

from backend import crud
from backend.api.audit_trail import audit
from backend.api.deps import AdminKey, DbDep
from backend.api.problems import problem_responses
from backend.models import ApiKey
from backend.schemas import MAX_ID, KeyCreate, KeyCreated, KeyPublic, KeysPublic

router = APIRouter(prefix="/keys", tags=["access"])

KeyId = Annotated[int, Path(ge=1, le=MAX_ID, description="The key's id.")]


def key_public(row: ApiKey) -> KeyPublic:
    return KeyPublic.model_validate(row, from_attributes=True)


@router.get(
    "",
    response_model=KeysPublic,
    responses=problem_responses(401, 403),
    summary="Every key (revoked ones too)",
)
async def list_keys(db: DbDep, _admin: AdminKey) -> KeysPublic:
    def work(session: Session) -> KeysPublic:
        rows = crud.list_api_keys(session)
        return KeysPublic(data=[key_public(row) for row in rows], count=len(rows))

    return await db.read(work)


@router.post(
    "",
    status_code=201,
    response_model=KeyCreated,
    responses=problem_responses(401, 403),
    summary="Create a key",
)
async def create_key(body: KeyCreate, db: DbDep, admin: AdminKey) -> KeyCreated:
    """The answer holds the key itself, once: only its hash is stored."""

    def work(session: Session) -> KeyCreated:
        row, key = crud.create_api_key(session, name=body.name, role=body.role)
        created = KeyCreated(**key_public(row).model_dump(), key=key)
        audit(session, admin, "key.create", "key", row.id, name=body.name, role=body.role)
        return created

    return await db.run(work)


@router.delete(
    "/{key_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404),
    summary="Revoke a key",
)
async def revoke_key(key_id: KeyId, db: DbDep, admin: AdminKey) -> Response:
    """From the next request on, the key is a 401. An unknown or already revoked key is a 404."""

    def work(session: Session) -> None:
        crud.revoke_api_key(session, key_id=key_id)
        audit(session, admin, "key.revoke", "key", key_id)

    await db.run(work)
    return Response(status_code=204)
