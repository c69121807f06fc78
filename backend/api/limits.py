"""Request body size limit, answered as problem+json 413 (Starlette's own limiter answers in
plain text)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.api.problems import problem


class BodyLimitMiddleware:
    """`max_bytes` for every body; paths in `larger` (a dataset upload, which streams its
    body to disk) have their own limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.larger.get(scope.get("path", ""), self.max_bytes)
        detail = f"the request body is larger than {max_bytes} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > max_bytes:
                    await problem(413, detail, kind="too-large")(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    # Raised inside the route's body read: the app's handlers answer with it.
                    raise HTTPException(413, detail)
            return message

        await self.app(scope, limited, send)
