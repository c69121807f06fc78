"""The reward server's FastAPI app.

    POST /score   score images (see codec.py for the bodies); bearer key when one is set
    GET  /health  the process is up (no key)
    GET  /ready   the reward is loaded: 200, else 503 (no key)
    GET  /info    the reward's name, weights and version, the device, limits and batch stats

A request whose body is over `max_body_bytes` is refused with 413 before it is read whole; one
with more than `max_items` images with 413 too. A wrong or missing key answers 401, the key
compared in constant time (hmac.compare_digest).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

import treegrpo
from rewardserve.batcher import Batcher
from rewardserve.codec import (
    BadRequest,
    TooLarge,
    decode_request,
    encode_answer,
    is_msgpack,
    wants_msgpack,
)
from rewardserve.scorer import Scorer

SCORE_PATH = "/score"


@dataclass(frozen=True)
class Limits:
    max_batch: int = 32
    max_wait: float = 0.01  # seconds
    max_body_bytes: int = 64 * 2**20
    max_items: int = 1024
    max_pixels: int = 4096 * 4096


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"title": "reward server", "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def create_app(scorer: Scorer, limits: Limits, api_key: str | None = None) -> FastAPI:
    batcher = Batcher(scorer.score_batch, limits.max_batch, limits.max_wait)
    state: dict[str, str | None] = {"load_error": None}

    async def load() -> None:
        try:
            await asyncio.to_thread(scorer.load)
        except Exception as exc:
            state["load_error"] = f"{type(exc).__name__}: {exc}"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        loading = asyncio.create_task(load())
        yield
        loading.cancel()
        await batcher.stop()

    app = FastAPI(title="treegrpo reward server", lifespan=lifespan)
    expected = api_key.encode() if api_key else None

    def authorised(request: Request) -> bool:
        if expected is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest takes as long for any wrong key of a given length: no timing oracle.
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)

    def unauthorised() -> JSONResponse:
        return _problem(
            401, "a valid bearer key is required", headers={"WWW-Authenticate": "Bearer"}
        )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if scorer.ready:
            return JSONResponse({"status": "ready"})
        detail = state["load_error"] or "loading the reward"
        return JSONResponse({"status": "not ready", "detail": detail}, status_code=503)

    @app.get("/info")
    async def info(request: Request) -> JSONResponse:
        if not authorised(request):
            return unauthorised()
        return JSONResponse(
            {
                "reward": "+".join(scorer.weights),
                "weights": scorer.weights,
                "version": treegrpo.__version__,
                "device": str(scorer.device),
                "ready": scorer.ready,
                "formats": ["application/json (PNG)", "application/msgpack (raw uint8)"],
                "limits": {
                    "max_batch": limits.max_batch,
                    "max_wait_ms": limits.max_wait * 1000,
                    "max_body_bytes": limits.max_body_bytes,
                    "max_items": limits.max_items,
                    "max_pixels": limits.max_pixels,
                },
                "stats": batcher.stats.as_dict(),
            }
        )

    @app.post(SCORE_PATH)
    async def score(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        if not scorer.ready:
            detail = state["load_error"] or "the reward is still loading"
            return _problem(503, detail, headers={"Retry-After": "5"})
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
            return _problem(413, f"the body is over the limit of {limits.max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                return _problem(413, f"the body is over the limit of {limits.max_body_bytes} bytes")
            chunks.append(chunk)
        content_type = request.headers.get("content-type")
        try:
            items = decode_request(
                b"".join(chunks), content_type, limits.max_items, limits.max_pixels
            )
        except BadRequest as exc:
            return _problem(413 if isinstance(exc, TooLarge) else 400, str(exc))
        results = await batcher.score(items)
        # An item error from the scorer names no index; put it in front here.
        errors = [
            error if error is None or error.startswith("image ") else f"image {i}: {error}"
            for i, (_, error) in enumerate(results)
        ]
        body, media_type = encode_answer(
            [score for score, _ in results],
            errors,
            wants_msgpack(request.headers.get("accept")) or is_msgpack(content_type),
        )
        return Response(body, media_type=media_type)

    return app
