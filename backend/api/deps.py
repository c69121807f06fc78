"""Request-scoped dependencies, as `Annotated` aliases the routes declare.

- SettingsDep: the app's Settings (create_app(settings) or the environment's).
- SessionDep: one short-lived Session per request, closed when the answer is sent.
- WriteKey: a valid, unrevoked X-API-Key (401 problem+json otherwise): every mutating route.
- ReadKey: the same when settings.reads_require_key, else nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from backend import crud
from backend.api.problems import ProblemError
from backend.db import session_factory
from backend.models import ApiKey
from backend.settings import Settings

API_KEY_HEADER = "X-API-Key"

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="An API key from `treegrpo api-key create NAME` (or the embedded local key).",
)


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    session = session_factory(settings.resolved_database_url)()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def _check_key(session: Session, key: str | None) -> ApiKey:
    headers = {"WWW-Authenticate": f'ApiKey header="{API_KEY_HEADER}"'}
    if not key:
        raise ProblemError(
            401,
            f"this route needs an API key in the {API_KEY_HEADER} header "
            "(create one with `treegrpo api-key create NAME`)",
            kind="unauthorized",
            headers=headers,
        )
    row = crud.verify_api_key(session, key=key)
    if row is None:
        raise ProblemError(
            401, "the API key is unknown or revoked", kind="unauthorized", headers=headers
        )
    return row


def require_write_key(
    session: SessionDep, key: Annotated[str | None, Security(api_key_header)]
) -> ApiKey:
    return _check_key(session, key)


def require_read_key(
    settings: SettingsDep,
    session: SessionDep,
    key: Annotated[str | None, Security(api_key_header)],
) -> ApiKey | None:
    if not settings.reads_require_key:
        return None
    return _check_key(session, key)


WriteKey = Annotated[ApiKey, Depends(require_write_key)]
ReadKey = Annotated[ApiKey | None, Depends(require_read_key)]
