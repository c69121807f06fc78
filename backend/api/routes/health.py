"""/health (the process answers) and /ready (the database is reachable and migrated, and the
broker is reachable)."""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from backend import db, migrate, queue
from backend.api.deps import SettingsDep
from backend.api.problems import problem, problem_responses
from backend.schemas import HealthPublic, ReadyPublic
from backend.settings import Settings

router = APIRouter(tags=["health"])


@cache
def _head_revision() -> str | None:
    return migrate.head_revision()


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]


def check_database(settings: Settings) -> str:
    """'ok', or what is wrong with the database."""
    url = settings.resolved_database_url
    try:
        db.ping(url)
        revision = migrate.current_revision(url)
    except Exception as exc:
        return f"unavailable ({_short(exc)})"
    head = _head_revision()
    if revision != head:
        return f"not migrated (revision {revision}, expected {head}): run `treegrpo migrate`"
    return "ok"


def check_broker(settings: Settings) -> str:
    try:
        queue.ping_broker(settings=settings)
    except Exception as exc:
        return f"unavailable ({_short(exc)})"
    return "ok"


@router.get("/health", response_model=HealthPublic, summary="Liveness")
async def health() -> HealthPublic:
    return HealthPublic()


@router.get(
    "/ready",
    response_model=ReadyPublic,
    responses=problem_responses(503),
    summary="Readiness: database and broker",
)
async def ready(settings: SettingsDep) -> ReadyPublic | JSONResponse:
    database = await run_in_threadpool(check_database, settings)
    broker = await run_in_threadpool(check_broker, settings)
    if database == "ok" and broker == "ok":
        return ReadyPublic(database=database, broker=broker)
    failing = [
        name for name, state in (("database", database), ("broker", broker)) if state != "ok"
    ]
    return problem(
        503,
        "; ".join(
            f"{name}: {state}"
            for name, state in (("database", database), ("broker", broker))
            if state != "ok"
        ),
        kind="not-ready",
        title=f"Not ready: {' and '.join(failing)}",
        database=database,
        broker=broker,
    )
