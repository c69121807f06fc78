"""The Datasets tab's upload status line (frontend/datasets.py `upload` with a report, as
gr.Progress gets it): while the upload request waits, the import's progress is polled at
GET /datasets/imports/{progress_id} with the id the upload sent, and reported as a fraction and
a line of text; a poll the API cannot answer shows a line without figures. Against a fake
transport (httpx.MockTransport) that answers the upload only after three polls."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from frontend import datasets
from frontend.client import ApiClient

TOTAL = 4_000_000


class FakeApi:
    def __init__(self) -> None:
        self.polls: list[str] = []
        self.upload_ids: list[str] = []
        self.answered = threading.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/api/v1/datasets/upload":
            self.upload_ids.append(request.url.params["progress_id"])
            request.read()
            assert self.answered.wait(10), "the tab never polled"
            made = {"id": 3, "name": "kites", "rows": 12345, "sha256": "ab" * 32}
            return httpx.Response(201, json=made)
        if request.method == "GET" and path.startswith("/api/v1/datasets/imports/"):
            self.polls.append(path.rsplit("/", 1)[1])
            step = len(self.polls)
            if step == 1:  # the upload has not reached the import yet
                return httpx.Response(404, json={"status": 404, "detail": "no import"})
            if step == 4:
                self.answered.set()
            phase = "reading" if step < 4 else "storing"
            return httpx.Response(
                200, json={"phase": phase, "done": TOTAL * (step - 1) // 4, "total": TOTAL}
            )
        return httpx.Response(500)


def test_the_upload_reports_the_imports_progress_until_it_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "POLL_SECONDS", 0.01)
    api = FakeApi()
    client = ApiClient("http://api.test", api_key="k", transport=httpx.MockTransport(api))
    sh: Any = SimpleNamespace(ctx=SimpleNamespace(client=lambda request, key: client))
    source = tmp_path / "kites.jsonl"
    source.write_text('{"prompt": "a kite"}\n')
    reports: list[tuple[float | None, str]] = []
    status = datasets.upload(
        sh, str(source), "kites", "train", "k", None, lambda f, t: reports.append((f, t))
    )
    assert "Imported #3 kites: 12,345 rows" in status
    assert api.upload_ids and set(api.polls) == {api.upload_ids[0]}
    assert reports[:4] == [
        (None, "Uploading and importing ..."),
        (0.25, "Reading: 1.0 of 4.0 MB (25%)"),
        (0.5, "Reading: 2.0 of 4.0 MB (50%)"),
        (0.75, "Storing: 3.0 of 4.0 MB (75%)"),
    ]


def test_without_a_report_the_upload_sends_no_progress_id(tmp_path: Path) -> None:
    sent: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(201, json={"id": 1, "name": "k", "rows": 1, "sha256": "cd" * 32})

    client = ApiClient("http://api.test", api_key="k", transport=httpx.MockTransport(api))
    sh: Any = SimpleNamespace(ctx=SimpleNamespace(client=lambda request, key: client))
    source = tmp_path / "k.txt"
    source.write_text("a kite\n")
    assert "Imported #1" in datasets.upload(sh, str(source), "k", "train", "k", None)
    assert len(sent) == 1 and "progress_id" not in sent[0].url.params
