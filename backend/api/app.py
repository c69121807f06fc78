"""The FastAPI app factory: routes under /api/v1, OpenAPI at /docs, errors as problem+json.

app = create_app()                      # settings from TREEGRPO_* / .env
app = create_app(Settings(database_url=...))   # tests, benchmarks, embedding
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import RedirectResponse

from backend.api import problems
from backend.api.deps import Database
from backend.api.limits import BodyLimitMiddleware
from backend.api.routes import api_router
from backend.artifact_store import open_store
from backend.schemas import API_PREFIX
from backend.settings import Settings, get_settings

log = logging.getLogger("backend.api")

DESCRIPTION = """\
Submit TreeGRPO training, sampling and evaluation jobs; follow them live; browse their metrics,
logged denoising trees, sample galleries and checkpoints. The contract is docs/API.md.

Mutating routes need an `X-API-Key` header (`treegrpo api-key create NAME`); reads need it too
when the server runs with `TREEGRPO_READS_REQUIRE_KEY=true`. Errors other than validation (422)
are `application/problem+json`.
"""


def _version() -> str:
    try:
        return version("treegrpo-studio")
    except PackageNotFoundError:
        return "0.0.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="TreeGRPO studio API",
        version=_version(),
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.db = Database(settings)
    app.state.store = open_store(settings)
    app.state.ui_mounted = False
    problems.install(app)
    app.include_router(api_router, prefix=API_PREFIX)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Idempotency-Key", "Content-Type"],
            expose_headers=["X-Next-Offset"],
        )

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui" if app.state.ui_mounted else "/docs")

    return app
