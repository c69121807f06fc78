"""/artifacts/{path}: files from inside the artifact store, and nothing else.

storage.resolve_inside refuses absolute paths, '..', NUL bytes and backslashes, and anything whose
real location (symlinks resolved) is outside the store; every refusal, a folder and a missing
file alike, is the same 404, so an answer says nothing about what lies outside.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from backend.api import files
from backend.api.deps import ReadKey, SettingsDep
from backend.api.problems import ProblemError, problem_responses
from backend.storage import OutsideStore, resolve_inside

router = APIRouter(tags=["artifacts"])


@router.get(
    "/artifacts/{path:path}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The file (images and JSON inline, anything else as a download).",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        **problem_responses(404),
    },
    summary="A file from the artifact store",
)
def get_artifact(path: str, settings: SettingsDep, _key: ReadKey) -> FileResponse:
    missing = ProblemError(404, "no such artifact", kind="not-found")
    try:
        real = resolve_inside(settings.resolved_artifact_dir, path)
        if not real.is_file():
            raise missing
    except (OutsideStore, OSError, ValueError) as exc:  # OSError: a name too long, ...
        raise missing from exc
    media_type, inline = files.media_type(real)
    headers = dict(files.SAFE_HEADERS)
    headers["Cache-Control"] = "private, max-age=60"
    return FileResponse(
        real,
        media_type=media_type,
        headers=headers,
        filename=None if inline else real.name,
        content_disposition_type="inline" if inline else "attachment",
    )
