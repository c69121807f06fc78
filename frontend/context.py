"""Where the dashboard finds the API, and the per-call client made with the user's key.

- Standalone (`python -m frontend --api URL`): the given URL, for the server-side calls and for
  the browser's image and download links.
- Mounted in the API process (`frontend.app:mount`): the callbacks run inside that process and
  call it back over loopback: at $TREEGRPO_API_URL when set, else at the address the serving
  socket is bound to (never the request's Host header, which the client controls); the browser
  loads images from the same origin it loaded the page from.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from frontend.client import DEFAULT_TIMEOUT_S, ApiClient
from frontend.thumbs import ThumbnailCache

MOUNT_PATH = "/ui"
API_URL_ENV = "TREEGRPO_API_URL"


def loopback_base_url(scope: dict[str, Any], mount_path: str = MOUNT_PATH) -> str | None:
    """http://<bound host>:<port><outer root path> of the server that received `scope`."""
    server = scope.get("server")
    if not server or not isinstance(server, (tuple, list)) or len(server) != 2:
        return None
    host, port = str(server[0]), server[1]
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    root = str(scope.get("root_path") or "").rstrip("/")
    if root.endswith(mount_path):
        root = root[: -len(mount_path)]
    scheme = "https" if scope.get("scheme") == "https" else "http"
    authority = f"{host}:{port}" if port is not None else host
    return f"{scheme}://{authority}{root}"


@dataclass
class UiContext:
    """`api_url`: fixed server-side API root (None: found per request); `public_base`: what the
    browser prefixes to /api/v1/... links ("" = same origin as the page)."""

    api_url: str | None = None
    public_base: str = ""
    timeout: float = DEFAULT_TIMEOUT_S
    transport: httpx.BaseTransport | None = None
    thumbs: ThumbnailCache = field(default_factory=ThumbnailCache, repr=False)
    _http: httpx.Client | None = field(default=None, repr=False)
    _background: ThreadPoolExecutor | None = field(default=None, repr=False)

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            # Enough pooled connections for the thumbnail fetches of a few sessions at once.
            limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
            self._http = httpx.Client(transport=self.transport, timeout=self.timeout, limits=limits)
        return self._http

    def in_background(self, fn: Any, *args: Any) -> Future[Any]:
        """Run `fn(*args)` on the one background thread (cache warming; never user-visible)."""
        if self._background is None:
            self._background = ThreadPoolExecutor(1, thread_name_prefix="treegrpo-ui-prefetch")
        return self._background.submit(fn, *args)

    def base_url(self, request: Any = None) -> str:
        if self.api_url:
            return self.api_url
        env = os.environ.get(API_URL_ENV, "").strip()
        if env:
            return env
        raw = getattr(request, "request", None) if request is not None else None
        scope = getattr(raw, "scope", None)
        if isinstance(scope, dict):
            found = loopback_base_url(scope)
            if found:
                return found
        return "http://127.0.0.1:8000"

    def client(self, request: Any = None, key: str | None = None) -> ApiClient:
        return ApiClient(self.base_url(request), api_key=key, timeout=self.timeout, http=self.http)
