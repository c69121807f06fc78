"""The FastAPI app factory: routes under /api/v1, OpenAPI at /docs, errors as problem+json.

app = create_app()                      # settings from TREEGRPO_* / .env
app = create_app(Settings(database_url=...))   # tests, benchmarks, embedding
"""

from __future__ import annotations

import logging
import struct
import zlib
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse, Response

from backend.api import problems
from backend.api.deps import Database
from backend.api.limits import BodyLimitMiddleware
from backend.api.routes import api_router
from backend.artifact_store import open_store
from backend.private_files import make_private_dir
from backend.schemas import API_PREFIX
from backend.settings import Settings, get_settings

log = logging.getLogger("backend.api")

DESCRIPTION = """\
Submit TreeGRPO training, sampling and evaluation jobs; follow them live; browse their metrics,
logged denoising trees, sample galleries and checkpoints. The contract is docs/API.md.

Mutating routes need an `X-API-Key` header (`treegrpo api-key create NAME --role ROLE`) of a
member (its own runs) or an admin (every run, and `GET /audit`); a viewer reads only. Reads need
a key too when the server runs with `TREEGRPO_READS_REQUIRE_KEY=true`. `GET /me` says what the
key may do. Errors other than validation (422) are `application/problem+json`.
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
    make_private_dir(settings.data_dir)
    app.state.db = Database(settings)
    app.state.store = open_store(settings)
    app.state.ui_mounted = False
    problems.install(app)
    app.include_router(api_router, prefix=API_PREFIX)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        # A dataset upload streams its body to disk (routes/datasets.py) under its own limit.
        larger={f"{API_PREFIX}/datasets/upload": settings.max_dataset_bytes},
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["X-API-Key", "Idempotency-Key", "Content-Type"],
            expose_headers=["X-Next-Offset"],
        )

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui" if app.state.ui_mounted else "/docs")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        # Browsers ask for it on every page; a 404 each time is console noise.
        return Response(FAVICON_PNG, media_type="image/png", headers=_STATIC_CACHE)

    @app.get("/manifest.json", include_in_schema=False)
    async def manifest() -> JSONResponse:
        return JSONResponse(MANIFEST, headers=_STATIC_CACHE)

    if settings.access_log == "quiet":
        quiet_access_log()
    return app


_STATIC_CACHE = {"Cache-Control": "public, max-age=86400"}
MANIFEST = {
    "name": "TreeGRPO studio",
    "short_name": "TreeGRPO",
    "start_url": "/ui",
    "display": "browser",
    "icons": [{"src": "/favicon.ico", "sizes": "16x16", "type": "image/png"}],
}


def _png(size: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid square PNG, written by hand (the API has no imaging library to spare)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * size  # filter 0, then the row's pixels
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


FAVICON_PNG = _png(16, (46, 125, 50))


class QuietAccessLog(logging.Filter):
    """Drops the access-log lines of successful reads (the dashboard polls several routes every
    second or two: about 3,800 lines in 12 minutes, which scrolled the start-up banner and its
    API key away). The dashboard's own event posts go too: Gradio's timer ticks and clicks are
    POSTs to its queue (`/ui/gradio_api/queue/join`, 1,131 lines in 19 minutes), and every
    change they make reaches the API as its own request, which is logged. Mutations, errors
    and anything but GET/HEAD are still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not isinstance(args, tuple) or len(args) < 5:
            return True
        method, path, status = args[1], str(args[2]), args[4]
        if status not in OK_STATUSES:
            return True
        return not (method in ("GET", "HEAD") or UI_EVENTS in path)


OK_STATUSES = (200, 204, 206, 304)
# The path part of every Gradio-internal route of the mounted dashboard (queue/join, queue/data,
# heartbeat, upload): the browser's side of the UI's events, never a change by themselves.
UI_EVENTS = "/gradio_api/"


def quiet_access_log() -> None:
    """Install QuietAccessLog on uvicorn's access logger (once); TREEGRPO_ACCESS_LOG=full
    leaves it out."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, QuietAccessLog) for f in logger.filters):
        logger.addFilter(QuietAccessLog())
