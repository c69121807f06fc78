"""An API on httpx's mock transport for the dashboard's handler tests: answers by (method, path)
and keeps every request."""

from __future__ import annotations

from typing import Any

import httpx

from frontend.client import ApiClient


class FakeApi:
    """Answers by (method, path); records every request."""

    def __init__(self, routes: dict[tuple[str, str], Any]) -> None:
        self.routes = routes
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        answer = self.routes.get((request.method, request.url.path))
        if answer is None:
            return httpx.Response(404, json={"title": "Not Found", "detail": "no such route"})
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, json=answer)

    def client(self, key: str | None = "k-secret") -> ApiClient:
        return ApiClient("http://api.test", api_key=key, transport=httpx.MockTransport(self))

    def calls(self, method: str) -> list[str]:
        return [r.url.path for r in self.seen if r.method == method]
