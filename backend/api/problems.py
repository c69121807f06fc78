"""Errors as HTTP answers: 422 in FastAPI's validation shape, problem+json (RFC 9457) for the rest.

A domain error maps to its status (NotFound 404, Conflict 409); a database that cannot be
reached is a 503 that says so; anything unexpected is a 500 with no stack trace in the body.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.errors import Conflict, Forbidden, InvalidParams, NotFound, QuotaExceeded

log = logging.getLogger("backend.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "urn:treegrpo:problem:"
# Errors that mean "the database cannot answer now", not "this request is wrong".
DATABASE_DOWN = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
)


class ProblemError(Exception):
    """Raise from a route to answer with a problem+json body."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.title = title
        self.headers = headers
        self.extra = extra


def problem(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body = {
        "type": PROBLEM_BASE + (kind or phrase.lower().replace(" ", "-")),
        "title": title or phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for problem+json answers."""
    from backend.schemas import Problem

    return {
        code: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": "A problem."}
        for code in codes
    }


def validation_error(loc: Sequence[str | int], msg: str, kind: str, value: Any = None) -> Exception:
    """A 422 in FastAPI's shape, e.g. loc ("body", "config", "tree.k")."""
    return RequestValidationError(
        [{"loc": tuple(loc), "msg": _clip(msg), "type": kind, "input": _clip_input(value)}]
    )


def _clip(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clip_input(value: Any) -> Any:
    # The echo of a bad value must not turn a 1 MB string into a 1 MB error answer, nor carry
    # text that cannot be encoded (a lone surrogate).
    if isinstance(value, str):
        return _clip(value, 200).encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, int | float | bool) or value is None:
        return value
    return _clip(repr(value), 200)


def _sanitize_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's error list, with `ctx` values made JSON-safe and echoed inputs clipped."""
    out = []
    for error in errors:
        item = dict(error)
        if "ctx" in item and isinstance(item["ctx"], dict):
            item["ctx"] = {
                key: value if isinstance(value, str | int | float | bool) else str(value)
                for key, value in item["ctx"].items()
            }
        if "input" in item:
            item["input"] = _clip_input(item["input"])
        if isinstance(item.get("msg"), str):
            item["msg"] = _clip(item["msg"]).encode("utf-8", "replace").decode("utf-8")
        item.pop("url", None)
        out.append(item)
    return out


def validation_response(errors: Sequence[Any]) -> JSONResponse:
    from fastapi.encoders import jsonable_encoder

    clean = _sanitize_errors(errors)
    try:
        content = jsonable_encoder({"detail": clean})
    except Exception:  # an input that will not encode: drop the echoes, keep the reasons
        content = jsonable_encoder(
            {"detail": [{k: v for k, v in e.items() if k != "input"} for e in clean]}
        )
    return JSONResponse(content, status_code=422)


def install(app: FastAPI) -> None:
    """Register the error handlers on the app."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.url.path}"
        elif exc.status_code == 405 and detail == "Method Not Allowed":
            allowed = (exc.headers or {}).get("allow", "")
            detail = f"{request.method} is not allowed on {request.url.path}" + (
                f" (allowed: {allowed})" if allowed else ""
            )
        return problem(exc.status_code, detail, headers=dict(exc.headers or {}))

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem(
            exc.status,
            exc.detail,
            kind=exc.kind,
            title=exc.title,
            headers=exc.headers,
            **exc.extra,
        )

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return problem(404, str(exc), kind="not-found")

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return problem(409, str(exc), kind="conflict")

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> JSONResponse:
        return problem(403, str(exc), kind="forbidden", needed_role=exc.needed)

    @app.exception_handler(QuotaExceeded)
    async def _quota(request: Request, exc: QuotaExceeded) -> JSONResponse:
        # 429, not 409: nothing is wrong with the request, the key must wait until its queue
        # drains, and clients already retry a 429 after Retry-After.
        retry = str(request.app.state.settings.quota_retry_seconds)
        return problem(
            429,
            str(exc),
            kind="quota-exceeded",
            headers={"Retry-After": retry},
            setting="TREEGRPO_MAX_QUEUED_PER_KEY",
            limit=exc.limit,
        )

    @app.exception_handler(InvalidParams)
    async def _invalid_params(request: Request, exc: InvalidParams) -> JSONResponse:
        loc = ("body", "params", *exc.field.split("."))
        return validation_response([{"loc": loc, "msg": exc.reason, "type": "value_error"}])

    for error_type in DATABASE_DOWN:
        app.add_exception_handler(error_type, _database_down)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal error; the server log has the details", kind="internal")


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return database_down_response()


def database_down_response() -> JSONResponse:
    return problem(
        503,
        "the database is unavailable; try again shortly (GET /api/v1/ready tells more)",
        kind="database-unavailable",
        title="Database unavailable",
        headers={"Retry-After": "5"},
    )
