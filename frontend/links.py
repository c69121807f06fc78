"""Links the browser opens itself (a node's full-size image, a checkpoint or LoRA download) that
work when reads need a key: a plain link cannot carry the X-API-Key header, so it answered 401.

The UI issues a short-lived random token for one API path and the user's key, kept in this
process's memory only; `GET <ui>/files/<token>` fetches that path from the API with the key and
streams the answer back (same origin as the page, so it also works behind a path prefix). The
key never appears in a URL, in the page or in the browser's storage; a token names one file and
expires after TTL_SECONDS (TREEGRPO_LINK_TTL_SECONDS). The answer is streamed through chunk by chunk (a checkpoint zip of
gigabytes never sits in this process), with its Content-Type, Content-Disposition (the file name
the browser saves under) and Content-Length.

    href = link_for(client, "/api/v1/artifacts/jobs/1/.../node-00003.png")   # "files/<token>"
    href = link_for(client, "/api/v1/jobs/7/checkpoint")                     # the Run tab's
    add_route(app, "/ui")                     # frontend.app.mount does this before Gradio's
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from frontend.client import API_PREFIX, ApiClient, artifact_href

TTL_ENV = "TREEGRPO_LINK_TTL_SECONDS"


def ttl_seconds() -> int:
    """The operator's link lifetime (TREEGRPO_LINK_TTL_SECONDS, default 600)."""
    raw = os.environ.get(TTL_ENV, "").strip() or "600"
    try:
        ttl = int(raw)
    except ValueError:
        raise ValueError(f"{TTL_ENV} must be a whole number of seconds, got {raw!r}") from None
    if ttl < 1:
        raise ValueError(f"{TTL_ENV} must be at least 1 second, got {ttl}")
    return ttl


TTL_SECONDS = ttl_seconds()
MAX_LINKS = 4096
PASSED_HEADERS = (
    "content-type",
    "content-length",
    "content-disposition",
    "content-security-policy",
    "etag",
    "content-encoding",  # the body passes through raw (still encoded), so say how
    "location",  # the API's presigned bucket URL (TREEGRPO_ARTIFACT_REDIRECT): no key in it
)
EXPIRED = (
    f"This link has expired (links last {TTL_SECONDS // 60} minutes)"
    if TTL_SECONDS >= 120
    else f"This link has expired (links last {TTL_SECONDS} seconds)"
) + ": open it again from the dashboard."
UNREACHABLE = "The API did not answer: try the link again from the dashboard."


@dataclass(frozen=True)
class Link:
    base_url: str
    key: str
    path: str  # /api/v1/...
    expires: float


class LinkStore:
    def __init__(
        self, ttl: float = TTL_SECONDS, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.ttl = ttl
        self.transport = transport  # tests: the API in process (httpx.ASGITransport)
        self._links: dict[str, Link] = {}
        self._lock = threading.Lock()

    def issue(self, base_url: str, key: str, path: str) -> str:
        """A token for `path` fetched with `key`. The same file and key get the same token while
        it has over half its life left: the Run tab redraws its header every tick, and a new
        token each time would change the page and fill the store for nothing."""
        now = time.monotonic()
        link = Link(base_url.rstrip("/"), key, path, now + self.ttl)
        with self._lock:
            for old in [t for t, held in self._links.items() if held.expires <= now]:
                del self._links[old]
            for token, held in reversed(self._links.items()):
                same = (held.base_url, held.key, held.path) == (link.base_url, key, path)
                if same and held.expires - now > self.ttl / 2:
                    return token
            while len(self._links) >= MAX_LINKS:
                del self._links[next(iter(self._links))]
            token = secrets.token_urlsafe(24)
            self._links[token] = link
        return token

    def resolve(self, token: str) -> Link | None:
        with self._lock:
            link = self._links.get(token)
            if link is not None and link.expires <= time.monotonic():
                del self._links[token]
                return None
            return link


LINKS = LinkStore()
ROUTE = "/files/{token}"
ALIVE_ROUTE = "/files/{token}/alive"


def link_for(client: ApiClient, path: str | None, public_base: str = "") -> str | None:
    """A link the browser can open for an API path (/api/v1/...): through the UI's own origin
    when the client holds a key (reads may be closed), else the API's own URL."""
    if not path:
        return None
    if not client.api_key:
        bare, mark, query = path.partition("?")  # /api/v1/jobs/7/export?format=lora
        href = artifact_href(bare, public_base)
        return href + mark + query if href else None
    if not path.startswith(API_PREFIX + "/"):
        path = f"{API_PREFIX}/artifacts/{path.lstrip('/')}"
    return "files/" + LINKS.issue(client.base_url, client.api_key, path)


async def serve(request: Request) -> Response:
    """GET <ui>/files/<token>: the API's answer for the token's path, fetched with its key."""
    link = LINKS.resolve(str(request.path_params.get("token", "")))
    if link is None:
        return Response(EXPIRED, 404, media_type="text/plain")
    client = httpx.AsyncClient(timeout=60, transport=LINKS.transport)
    # Unencoded, please; and the body passes through raw either way, so Content-Length holds.
    sent = {"X-API-Key": link.key, "Accept-Encoding": "identity"}
    try:
        upstream = await client.send(
            client.build_request("GET", link.base_url + link.path, headers=sent), stream=True
        )
    except httpx.HTTPError:
        await client.aclose()
        return Response(UNREACHABLE, 502, media_type="text/plain")

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await upstream.aclose()
            await client.aclose()

    headers = {name: upstream.headers[name] for name in PASSED_HEADERS if name in upstream.headers}
    headers["Cache-Control"] = "private, no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    return StreamingResponse(body(), status_code=upstream.status_code, headers=headers)


async def alive(request: Request) -> Response:
    """GET <ui>/files/<token>/alive: 204 while the token is valid, else 404 with the reason. The
    page asks this beside a click on a link (frontend/static/links.js): a download of an
    expired link otherwise failed without a word."""
    if LINKS.resolve(str(request.path_params.get("token", ""))) is None:
        return Response(EXPIRED, 404, media_type="text/plain")
    return Response(status_code=204)


def add_route(app: Any, mount_path: str) -> None:
    """Serve the links at <mount_path>/files/<token> (call before mounting Gradio there: the
    first matching route answers)."""
    base = mount_path.rstrip("/")
    app.add_route(base + ALIVE_ROUTE, alive, methods=["GET"], include_in_schema=False)
    app.add_route(base + ROUTE, serve, methods=["GET"], include_in_schema=False)
