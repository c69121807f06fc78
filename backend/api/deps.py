"""Request-scoped dependencies, as `Annotated` aliases the routes declare.

- SettingsDep: the app's Settings (create_app(settings) or the environment's).
- StoreDep: the app's artifact store (a folder, or a bucket: backend/artifact_store.py).
- DbDep: the app's Database. `await db.run(work, ...)` calls `work(session, ...)` in one
  worker-thread call with one short session, closed before the answer is sent: one thread hop
  per request, and the event loop never waits on the database.
- AnyKey: a valid, unrevoked X-API-Key (401 problem+json otherwise), as a Caller (id, name,
  role).
- WriteKey: the same, of role member or admin (403 problem+json naming the role otherwise):
  every mutating route.
- AdminKey: the same, of role admin.
- ReadKey: AnyKey when settings.reads_require_key, else nothing (and no database call).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import cached_property
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from backend import access, crud
from backend.access import Caller
from backend.api.problems import ProblemError
from backend.artifact_store import ArtifactStore
from backend.db import session_factory
from backend.models import KeyRole
from backend.settings import Settings

API_KEY_HEADER = "X-API-Key"

T = TypeVar("T")
logger = logging.getLogger(__name__)

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="An API key from `treegrpo api-key create NAME` (or the embedded local key).",
)


class Database:
    """Runs a request's database work in a worker thread, inside one short session."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.resolved_database_url
        self.key_use_noted: dict[int, float] = {}  # key id -> when its use was last written

    @cached_property
    def factory(self) -> sessionmaker[Session]:
        # Made on first use: building the app touches neither the database nor its folder.
        return session_factory(self.url)

    @cached_property
    def read_factory(self) -> sessionmaker[Session]:
        # Autocommit: a read of one or two statements needs no BEGIN and ROLLBACK, each a round
        # trip to PostgreSQL (about a fifth of a hot read's server CPU). Same pool.
        engine = self.factory.kw["bind"].execution_options(isolation_level="AUTOCOMMIT")
        return sessionmaker(engine, expire_on_commit=False)

    async def read(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like run, for work that only reads: no transaction around it."""

        def call() -> T:
            with self.read_factory() as session:
                return work(session, *args, **kwargs)

        return await run_in_threadpool(call)

    def call(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Synchronously, in the calling thread."""
        with self.factory() as session:
            return work(session, *args, **kwargs)

    async def run(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in_threadpool(self.call, work, *args, **kwargs)


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def get_store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
DbDep = Annotated[Database, Depends(get_db)]


async def _check_key(db: Database, key: str | None) -> Caller:
    headers = {"WWW-Authenticate": f'ApiKey header="{API_KEY_HEADER}"'}
    if not key:
        raise ProblemError(
            401,
            f"this route needs an API key in the {API_KEY_HEADER} header "
            "(create one with `treegrpo api-key create NAME`)",
            kind="unauthorized",
            headers=headers,
        )
    found = await db.read(lambda session: crud.active_key(session, key=key))
    if found is None:
        raise ProblemError(
            401, "the API key is unknown or revoked", kind="unauthorized", headers=headers
        )
    key_id, name, role = found
    await _note_use(db, key_id)
    return Caller(key_id=key_id, name=name, role=KeyRole(role))


# GET /keys shows when each key was last used: written at most once a minute per key (and
# per API process: the app's Database remembers), so a read costs no write.
USE_RECORDED_EVERY_S = 60.0


async def _note_use(db: Database, key_id: int) -> None:
    now, noted = time.monotonic(), db.key_use_noted
    if now - noted.get(key_id, -USE_RECORDED_EVERY_S) < USE_RECORDED_EVERY_S:
        return
    noted[key_id] = now
    try:
        await db.run(
            lambda session: crud.touch_api_key(
                session, key_id=key_id, stale_after_seconds=USE_RECORDED_EVERY_S
            )
        )
    except SQLAlchemyError:  # a busy database: the request goes on, the next minute retries
        noted.pop(key_id, None)
        logger.warning("could not record the use of API key %s", key_id, exc_info=True)


async def require_any_key(
    db: DbDep, key: Annotated[str | None, Security(api_key_header)]
) -> Caller:
    return await _check_key(db, key)


async def require_write_key(
    db: DbDep, key: Annotated[str | None, Security(api_key_header)]
) -> Caller:
    caller = await _check_key(db, key)
    access.require_role(caller, KeyRole.member, "a change")
    return caller


async def require_admin_key(
    db: DbDep, key: Annotated[str | None, Security(api_key_header)]
) -> Caller:
    caller = await _check_key(db, key)
    access.require_role(caller, KeyRole.admin, "this route")
    return caller


async def require_read_key(
    settings: SettingsDep, db: DbDep, key: Annotated[str | None, Security(api_key_header)]
) -> Caller | None:
    if not settings.reads_require_key:
        return None
    return await _check_key(db, key)


# The caller's key: any role (AnyKey), member or admin (WriteKey: every mutating route; the
# route checks ownership of an existing run), admin only (AdminKey).
AnyKey = Annotated[Caller, Depends(require_any_key)]
WriteKey = Annotated[Caller, Depends(require_write_key)]
AdminKey = Annotated[Caller, Depends(require_admin_key)]
ReadKey = Annotated[Caller | None, Depends(require_read_key)]
