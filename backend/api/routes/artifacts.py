"""/artifacts/{path}: files from inside the artifact store, and nothing else.

A folder store: storage.resolve_inside refuses absolute paths, '..', NUL bytes and backslashes, and
anything whose real location (symlinks resolved) is outside the store. A bucket: the same key
checks (artifact_store.check_key), then the object is streamed through the API or, with
TREEGRPO_ARTIFACT_REDIRECT=true, answered with a redirect to a short-lived presigned URL. Every
refusal, a folder and a missing file alike, is the same 404, so an answer says nothing about
what lies outside.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from backend.api import files
from backend.api.deps import ReadKey, SettingsDep, StoreDep
from backend.api.problems import ProblemError, problem_responses
from backend.artifact_store import LocalStore, check_key
from backend.storage import OutsideStore

router = APIRouter(tags=["artifacts"])


@router.get(
    "/artifacts/{path:path}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file (images and JSON inline, anything else as a download).",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        307: {"description": "With TREEGRPO_ARTIFACT_REDIRECT=true: a presigned URL of it."},
        **problem_responses(404),
    },
    summary="A file from the artifact store",
)
async def get_artifact(
    path: str, settings: SettingsDep, store: StoreDep, _key: ReadKey
) -> Response:
    missing = ProblemError(404, "no such artifact", kind="not-found")
    if isinstance(store, LocalStore):
        try:
            real = store.path(path)
            if not real.is_file():
                raise missing
        except (OutsideStore, OSError, ValueError) as exc:  # OSError: a name too long, ...
            raise missing from exc
        media_type, inline = files.media_type(real)
        return FileResponse(
            real,
            media_type=media_type,
            headers=_headers(),
            filename=None if inline else real.name,
            content_disposition_type="inline" if inline else "attachment",
        )
    try:
        key = check_key(path)
        size = await run_in_threadpool(store.size, key)
    except (OutsideStore, ValueError) as exc:
        raise missing from exc
    if size is None:
        raise missing
    if settings.artifact_redirect:
        url = await run_in_threadpool(store.signed_url, key, settings.artifact_redirect_seconds)
        if url:
            # The URL is valid for minutes: it must not be cached longer than that.
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    name = PurePosixPath(key).name
    media_type, inline = files.media_type(PurePosixPath(key))
    headers = _headers()
    headers["Content-Length"] = str(size)
    disposition = "inline" if inline else f'attachment; filename="{files.ascii_name(name)}"'
    headers["Content-Disposition"] = disposition
    return StreamingResponse(store.stream(key), media_type=media_type, headers=headers)


def _headers() -> dict[str, str]:
    headers = dict(files.SAFE_HEADERS)
    headers["Cache-Control"] = "private, max-age=60"
    return headers
