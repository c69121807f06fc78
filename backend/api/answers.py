"""JSON answers of the hot read routes: bytes made once with orjson, an ETag over them, and a
304 Not Modified when the client's If-None-Match already names them.

Why not FastAPI's own path: with a response_model it validates the returned object against the
model again and then dumps it (and its ORJSONResponse is deprecated in favour of that). For a
job that is twice over a 60 KB config; here the config's stored JSON text is spliced in as it is
(orjson.Fragment). The routes keep their response_model, so OpenAPI still documents the shape.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import Request, Response
from sqlalchemy import RowMapping

from backend.schemas import job_fields, logging_schedule
from treegrpo.secrets import redact

MEDIA_TYPE = "application/json"
# Pydantic writes UTC datetimes with a "Z"; so does this, so both paths give the same text.
_OPTIONS = orjson.OPT_UTC_Z


def encode(content: Any) -> bytes:
    return orjson.dumps(content, option=_OPTIONS)


def job_body(
    row: Mapping[str, Any] | RowMapping,
    queue_position: int | None = None,
    nodes: Sequence[Mapping[str, Any]] = (),
) -> bytes:
    """A job from a crud.job_rows mapping: the summary fields, plus the config when the row has
    `config_json` (the stored text, spliced in without decoding) and, for train jobs, when it
    logs next (read from the few settings that say so), and a multi-node job's `nodes`."""
    fields = job_fields(row, queue_position)
    config_json = row.get("config_json")
    if config_json is not None:
        fields["config"] = redacted_config(config_json)
        schedule = None
        if row["kind"] == "train":
            schedule = logging_schedule(row, orjson.loads(config_json))
        fields["schedule"] = schedule
        fields["nodes"] = list(nodes)
    return encode(fields)


# A field name that ends in key, token, secret or password, anywhere in the stored text.
_SECRET_NAME = re.compile(rb'(?i)(key|token|secret|password)"\s*:')


def redacted_config(config_json: str | bytes) -> Any:
    """The stored config, spliced in as it is unless a secret-named field occurs in it; then
    decoded and given with such fields' values redacted (treegrpo/secrets.py). A config cannot
    hold a secret value any more (it is refused at submit); this covers configs stored before."""
    raw = config_json.encode() if isinstance(config_json, str) else config_json
    if not _SECRET_NAME.search(raw):
        return orjson.Fragment(config_json)
    return redact(orjson.loads(raw))


def etag_of(body: bytes) -> str:
    """A strong validator: the answer's bytes decide it, so any change of any field changes it."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _matches(if_none_match: str, etag: str) -> bool:
    # RFC 9110 section 13.1.2: weak comparison, a list of tags or "*".
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))


def not_modified(request: Request, etag: str) -> bool:
    """Whether a GET's If-None-Match names `etag` (answer it with a bare 304)."""
    condition = request.headers.get("if-none-match")
    return request.method == "GET" and condition is not None and _matches(condition, etag)


def answer(
    request: Request,
    body: bytes,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] = {},
    etag: str | None = None,
) -> Response:
    """The body as JSON with its ETag (`etag`, else one over the body); a bare 304 when
    If-None-Match names that ETag (GET only: a mutating request always gets its answer)."""
    etag = etag or etag_of(body)
    out = {"ETag": etag, **headers}
    if not_modified(request, etag):
        return Response(status_code=304, headers=out)
    return Response(body, status_code=status_code, media_type=MEDIA_TYPE, headers=out)
