"""A small REST client for scripts (`treegrpo submit`): create a job, read it, follow its events.

    client = ApiClient(ClientSettings().api_url, api_key=...)
    job = client.submit({"kind": "train", "preset": "digits-treegrpo"})
    for event, data in client.events(job["id"]):
        ...

Its settings (TREEGRPO_API_URL, TREEGRPO_API_KEY) are the client's own: a script talks to an API
that may run elsewhere, so they are not the server's Settings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.schemas import API_PREFIX

DEFAULT_API_URL = "http://127.0.0.1:8000"


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TREEGRPO_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    api_url: str = Field(default=DEFAULT_API_URL, description="Where the API runs.")
    api_key: str | None = Field(default=None, description="X-API-Key for mutating calls.")
    data_dir: Path = Field(
        default=Path("data"), description="The embedded deployment's folder (its local key)."
    )


class ApiError(Exception):
    """An answer other than 2xx, with a message fit for a terminal."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        super().__init__(describe_error(status, body))


def describe_error(status: int, body: Any) -> str:
    """422 as one `field: reason` line per error; problem+json as its title and detail."""
    if status == 422 and isinstance(body, dict) and isinstance(body.get("detail"), list):
        lines = []
        for error in body["detail"]:
            loc = [str(part) for part in error.get("loc", [])]
            if loc[:1] == ["body"]:
                loc = loc[1:]
            lines.append(f"{'.'.join(loc) or 'request'}: {error.get('msg', 'invalid')}")
        return "invalid request:\n  " + "\n  ".join(lines)
    if isinstance(body, dict) and "detail" in body:
        title = body.get("title") or f"HTTP {status}"
        return f"{title} ({status}): {body['detail']}"
    return f"HTTP {status}: {str(body)[:500]}"


class ApiClient:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(
            base_url=base_url.rstrip("/") + API_PREFIX,
            headers=headers,
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body

    def submit(self, body: dict[str, Any], *, idempotency_key: str | None = None) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json(self.http.post("/jobs", json=body, headers=headers))

    def job(self, job_id: int) -> Any:
        return self._json(self.http.get(f"/jobs/{job_id}"))

    def events(
        self, job_id: int, *, since_step: int | None = None, read_timeout: float = 60.0
    ) -> Iterator[tuple[str, Any]]:
        """(event, data) pairs of /jobs/{id}/events until the server closes the stream."""
        params = {"since_step": since_step} if since_step is not None else {}
        timeout = httpx.Timeout(self.http.timeout.connect, read=read_timeout)
        with self.http.stream(
            "GET", f"/jobs/{job_id}/events", params=params, timeout=timeout
        ) as response:
            if response.status_code >= 400:
                response.read()
                self._json(response)
            yield from parse_sse(response.iter_lines())


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """text/event-stream lines -> (event, JSON data); comments (keep-alives) are skipped."""
    event, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                yield event, value
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value_text = line.partition(":")
            value_text = value_text.removeprefix(" ")
            if name == "event":
                event = value_text
            elif name == "data":
                data.append(value_text)
