"""Import progress through the studio: the import child process's progress lines reach the API
(backend/datasets.py run_import), the API shows a running import's phase at
GET /datasets/imports/{progress_id} while the request waits, storing reports per file, and
`treegrpo dataset import` draws it as one line on a terminal's stderr (none with --quiet or
when stderr is not a terminal)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import api_testing as at
import httpx
import pytest

from backend import dataset_cli
from backend import datasets as service
from backend.api import create_app
from backend.artifact_store import LocalStore
from backend.settings import Settings

DATASETS = "/api/v1/datasets"


def _jsonl(path: Path, count: int) -> Path:
    path.write_text(
        "".join(json.dumps({"prompt": f"a kite number {i}", "n": i}) + "\n" for i in range(count))
    )
    return path


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    roots = tmp_path / "roots"
    roots.mkdir()
    return at.make_settings(tmp_path, sqlite_url, model_roots=str(roots))


def test_the_child_process_progress_reaches_the_caller_and_ends_at_the_total(
    tmp_path: Path,
) -> None:
    source = _jsonl(tmp_path / "kites.jsonl", 60_000)
    calls: list[tuple[int, int]] = []
    spec = {"kind": "file", "source": str(source), "split": "train"}
    manifest = service.run_import(spec, tmp_path / "out", lambda d, t: calls.append((d, t)))
    assert manifest["rows"] == 60_000
    size = source.stat().st_size
    done = [d for d, _ in calls]
    assert calls[-1] == (size, size) and all(t == size for _, t in calls)
    assert done == sorted(set(done))  # strictly increasing


def test_publish_reports_the_bytes_stored_file_by_file(tmp_path: Path) -> None:
    folder = tmp_path / "ocr"
    folder.mkdir()
    (folder / "train.txt").write_text("".join(f"sign {i}\n" for i in range(3000)))
    (folder / "test.txt").write_text("mug\n")
    version = tmp_path / "version"
    manifest = service.run_import({"kind": "folder", "source": str(folder)}, version)
    calls: list[tuple[int, int]] = []
    store = LocalStore(tmp_path / "store")
    service.publish(store, version, manifest, lambda d, t: calls.append((d, t)))
    total = sum(p.stat().st_size for p in version.iterdir())
    assert [t for _, t in calls] == [total] * 3  # test, train, then the manifest
    assert [d for d, _ in calls] == sorted({d for d, _ in calls}) and calls[-1][0] == total


class GatedImport:
    """run_import that reports half its source read, then waits for the test's go."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.real = service.run_import

    def __call__(self, spec: dict[str, Any], out: Path, on_progress: Any = None) -> Any:
        size = Path(spec["source"]).stat().st_size
        if on_progress is not None:
            on_progress(size // 2, size)
        assert self.go.wait(30), "the test never let the import finish"
        manifest = self.real(spec, out)
        if on_progress is not None:
            on_progress(size, size)
        return manifest


def _key(settings: Settings) -> dict[str, str]:
    from backend import crud
    from backend.db import session_scope

    with session_scope(settings.resolved_database_url) as session:
        _, key = crud.create_api_key(session, name="importer", role="member")
    return {"X-API-Key": key}


def test_a_running_import_shows_its_phase_and_bytes_until_it_ends(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = GatedImport()
    monkeypatch.setattr(service, "run_import", gate)
    source = _jsonl(Path(settings.model_roots) / "kites.jsonl", 500)
    size = source.stat().st_size
    auth = _key(settings)
    body = {"name": "kites", "path": str(source), "progress_id": "kites-0123456789"}
    answers: list[httpx.Response] = []
    with (
        at.live_server(create_app(settings)) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        importing = threading.Thread(
            target=lambda: answers.append(http.post(DATASETS, json=body, headers=auth))
        )
        importing.start()
        seen = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            poll = http.get(f"{DATASETS}/imports/kites-0123456789")
            if poll.status_code == 200:
                seen = poll.json()
                break
            time.sleep(0.05)
        gate.go.set()
        importing.join(30)
        assert seen == {"phase": "reading", "done": size // 2, "total": size}
        assert answers and answers[0].status_code == 201, answers
        assert answers[0].json()["rows"] == 500
        gone = http.get(f"{DATASETS}/imports/kites-0123456789")
        assert gone.status_code == 404 and "no import" in gone.text
        assert http.get(f"{DATASETS}/imports/bad%20id").status_code == 422
        refused = http.post(DATASETS, json={**body, "progress_id": "../x"}, headers=auth)
        assert refused.status_code == 422


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class SteppedImport:
    """run_import that reports its source read in ten steps, 50 ms apart."""

    def __init__(self) -> None:
        self.real = service.run_import

    def __call__(self, spec: dict[str, Any], out: Path, on_progress: Any = None) -> Any:
        size = Path(spec["source"]).stat().st_size
        for step in range(1, 11):
            if on_progress is not None:
                on_progress(size * step // 10, size)
            time.sleep(0.05)
        return self.real(spec, out)


def test_the_cli_draws_one_progress_line_on_a_terminal_only(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from treegrpo.cli import main as treegrpo_main

    monkeypatch.setattr(service, "run_import", SteppedImport())
    monkeypatch.setattr(dataset_cli, "POLL_SECONDS", 0.02)
    source = _jsonl(tmp_path / "kites.jsonl", 300)
    key = _key(settings)["X-API-Key"]
    with at.live_server(create_app(settings)) as server:
        common = ["--api", server.url, "--api-key", key]
        terminal = FakeTerminal()
        monkeypatch.setattr("sys.stderr", terminal)
        assert treegrpo_main(["dataset", "import", str(source), "--name", "k", *common]) == 0
        drawn = terminal.getvalue()
        assert drawn.startswith("\r") and drawn.endswith("\n") and drawn.count("\n") == 1
        percents = [int(p) for p in re.findall(r"reading [\d.]+ of [\d.]+ MB \((\d+)%\)", drawn)]
        assert len(percents) >= 3 and percents == sorted(percents), drawn

        for quiet, stream in (("--quiet", FakeTerminal()), (None, io.StringIO())):
            monkeypatch.setattr("sys.stderr", stream)
            argv = ["dataset", "import", str(source), "--name", "k", *common]
            assert treegrpo_main(argv + ([quiet] if quiet else [])) == 0
            assert stream.getvalue() == ""


def test_any_api_process_answers_for_an_import_another_process_runs(settings: Settings) -> None:
    """Behind several API processes a poll reaches any of them: the progress is in the database,
    not in the memory of the process that runs the import (a 404 there before)."""
    elsewhere = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from backend.import_progress import ImportBoard\n"
            f"with ImportBoard({settings.resolved_database_url!r}).track('far-away-01') as report:\n"
            "    report('reading', 50, 100)\n"
            "    print('ready', flush=True)\n"
            "    sys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert elsewhere.stdout is not None and elsewhere.stdin is not None
    try:
        assert elsewhere.stdout.readline().strip() == "ready"
        auth = _key(settings)
        with (
            at.live_server(create_app(settings)) as server,
            httpx.Client(base_url=server.url) as http,
        ):
            shown = http.get(f"{DATASETS}/imports/far-away-01", headers=auth)
            assert shown.status_code == 200, shown.text
            assert shown.json() == {"phase": "reading", "done": 50, "total": 100}
            elsewhere.stdin.write("\n")
            elsewhere.stdin.flush()
            assert elsewhere.wait(30) == 0
            assert http.get(f"{DATASETS}/imports/far-away-01", headers=auth).status_code == 404
    finally:
        elsewhere.kill()
