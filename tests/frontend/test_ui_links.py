"""Links the browser opens itself work with reads closed (frontend/links.py): the UI's own
origin serves them with the user's key, which never appears in a URL; a token names one file
and expires; the tree panel's full-size link and the Run tab's checkpoint and LoRA downloads
are such links, with the folder store and with S3. The answer streams through."""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save_file
from starlette.requests import Request
from starlette.responses import StreamingResponse

from backend import crud, migrate
from backend.api import create_app
from backend.db import session_scope
from backend.models import Job as JobRow
from backend.settings import Settings
from frontend import links
from frontend.client import ApiClient
from frontend.context import UiContext
from frontend.run import header_html

ART = "jobs/1/trees/epoch-000001/tree-00/images/node-00003.png"
CHECKPOINT = "jobs/{job}/checkpoints/epoch-000002"
WEIGHTS = {"layer.weight": np.arange(12, dtype=np.float32).reshape(3, 4)}
LORA = {
    "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": np.ones((4, 8), np.float32),
    "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": np.zeros((8, 4), np.float32),
}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FastAPI, str]]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate.upgrade(url)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        broker_url="",
        artifact_dir=tmp_path / "artifacts",
        reads_require_key=True,
    )
    path = settings.resolved_artifact_dir / ART
    path.parent.mkdir(parents=True)
    Image.new("RGB", (512, 512), (10, 200, 30)).save(path)
    with session_scope(url) as session:
        _, key = crud.create_api_key(session, name="reader", role="viewer")
    app = create_app(settings)
    old = links.LINKS
    links.LINKS = links.LinkStore(transport=httpx.ASGITransport(app=app))
    try:
        yield app, key
    finally:
        links.LINKS = old


def _ui() -> TestClient:
    ui = FastAPI()
    links.add_route(ui, "/ui")
    return TestClient(ui)


def test_a_link_serves_the_file_with_reads_closed_and_no_key_in_the_url(
    api: tuple[FastAPI, str],
) -> None:
    app, key = api
    with TestClient(app) as direct:
        assert direct.get(f"/api/v1/artifacts/{ART}").status_code == 401  # a plain link
    client = ApiClient("http://api.test", api_key=key)
    href = links.link_for(client, f"/api/v1/artifacts/{ART}")
    assert href is not None and href.startswith("files/") and key not in href
    with _ui() as ui:
        answer = ui.get(f"/ui/{href}")
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "image/png"
        assert answer.headers["cache-control"] == "private, no-store"
        assert Image.open(io.BytesIO(answer.content)).size == (512, 512)  # full size
        assert ui.get("/ui/files/not-a-token").status_code == 404
    # Without a key (reads open) the link is the API's own URL.
    assert links.link_for(ApiClient("http://api.test"), ART) == f"/api/v1/artifacts/{ART}"


def test_a_link_expires(api: tuple[FastAPI, str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, key = api
    token = links.LINKS.issue("http://api.test", key, f"/api/v1/artifacts/{ART}")
    with _ui() as ui:
        assert ui.get(f"/ui/files/{token}").status_code == 200  # alive until its TTL
        now = links.time.monotonic()
        monkeypatch.setattr(links.time, "monotonic", lambda: now + links.TTL_SECONDS + 1)
        assert links.LINKS.resolve(token) is None
        gone = ui.get(f"/ui/files/{token}")
    assert gone.status_code == 404 and gone.headers["content-type"].startswith("text/plain")
    assert gone.text == links.EXPIRED and "open it again from the dashboard" in gone.text


def test_the_same_file_and_key_reuse_a_token_until_half_its_life_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = links.LinkStore(ttl=100)
    now = 1000.0
    monkeypatch.setattr(links.time, "monotonic", lambda: now)
    first = store.issue("http://api.test/", "key-a", "/api/v1/jobs/1/checkpoint")
    # The Run tab redraws its header every tick: the same link, not a new token each time.
    assert store.issue("http://api.test", "key-a", "/api/v1/jobs/1/checkpoint") == first
    assert store.issue("http://api.test", "key-b", "/api/v1/jobs/1/checkpoint") != first
    assert store.issue("http://api.test", "key-a", "/api/v1/jobs/2/checkpoint") != first
    now += 51  # under half its life left: a fresh token; the old one still works to its end
    fresh = store.issue("http://api.test", "key-a", "/api/v1/jobs/1/checkpoint")
    assert fresh != first and store.resolve(first) is not None
    now += 50
    assert store.resolve(first) is None and store.resolve(fresh) is not None


def test_the_dashboard_served_alone_serves_links_at_its_root() -> None:
    from frontend.app import standalone_app

    with TestClient(standalone_app("http://127.0.0.1:9", "http://127.0.0.1:9")) as client:
        assert client.get("/").status_code == 200  # the dashboard
        gone = client.get("/files/unknown")  # a link "files/<token>" from the page at /
        assert gone.status_code == 404 and gone.text == links.EXPIRED


def test_the_dashboard_serves_links_under_its_mount() -> None:
    from frontend.app import mount

    app = FastAPI()
    mount(app)
    with TestClient(app) as client:
        assert client.get("/ui/files/unknown").status_code == 404
        assert "expired" in client.get("/ui/files/unknown").text


def _seed_checkpoint(url: str, root: Path) -> tuple[int, str]:
    """A LoRA train job and its latest checkpoint (weights, state, the trainer's diffusers
    export in lora/), written under `root` at its store path; (job id, that path)."""
    with session_scope(url) as session:
        job, _ = crud.create_job(
            session,
            kind="train",
            name="lora run",
            config={"algorithm": "treegrpo", "model": "digits", "train": {"lora_rank": 4}},
            algorithm="treegrpo",
            progress_total=2,
        )
        job_id = int(job.id)
    relpath = CHECKPOINT.format(job=job_id)
    folder = root / relpath
    (folder / "lora").mkdir(parents=True)
    save_file(WEIGHTS, str(folder / "model.safetensors"))
    (folder / "state.json").write_text('{"state": {"epoch": 2}}')
    save_file(LORA, str(folder / "lora" / "pytorch_lora_weights.safetensors"))
    (folder / "lora" / "README.md").write_text("# LoRA card")
    with session_scope(url) as session:
        row = session.get(JobRow, job_id)
        assert row is not None
        row.checkpoint_path = relpath
    return job_id, relpath


def _closed(tmp_path: Path, **more: Any) -> tuple[Settings, str, FastAPI, str]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate.upgrade(url)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        broker_url="",
        artifact_dir=tmp_path / "artifacts",
        reads_require_key=True,
        **more,
    )
    with session_scope(url) as session:
        _, key = crud.create_api_key(session, name="reader", role="viewer")
    return settings, url, create_app(settings), key


def _header_links(api: TestClient, key: str, job_id: int) -> dict[str, str]:
    """The hrefs of the Run header's download buttons, as the Run tab renders them."""
    import re

    client = ApiClient(str(api.base_url), api_key=key, http=api)
    header = header_html(UiContext(), client, client.get_job(job_id))
    assert key not in header
    found = re.findall(r'href="([^"]*)" download\s+data-testid="([a-z]+)-link"', header)
    return {name: href for href, name in found}


def _served_zip(ui: TestClient, href: str, filename: str) -> zipfile.ZipFile:
    assert href.startswith("files/"), href
    answer = ui.get(f"/ui/{href}")  # no key, no cookie: the token alone
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    assert answer.headers["content-disposition"] == f'attachment; filename="{filename}"'
    assert answer.headers["cache-control"] == "private, no-store"
    return zipfile.ZipFile(io.BytesIO(answer.content))


def _assert_checkpoint_and_lora(ui: TestClient, hrefs: dict[str, str], job_id: int) -> None:
    with _served_zip(ui, hrefs["checkpoint"], f"job-{job_id}-epoch-000002.zip") as archive:
        names = sorted(archive.namelist())
        assert names == [
            "lora/README.md",
            "lora/pytorch_lora_weights.safetensors",
            "model.safetensors",
            "state.json",
        ]
        weights = load_safetensors(archive.read("model.safetensors"))
        np.testing.assert_array_equal(weights["layer.weight"], WEIGHTS["layer.weight"])
    with _served_zip(ui, hrefs["export"], f"job-{job_id}-epoch-000002-lora.zip") as archive:
        assert sorted(archive.namelist()) == ["README.md", "pytorch_lora_weights.safetensors"]
        lora = load_safetensors(archive.read("pytorch_lora_weights.safetensors"))
        assert lora.keys() == LORA.keys()
        for name, value in LORA.items():
            np.testing.assert_array_equal(lora[name], value)


@pytest.fixture
def ui_links() -> Iterator[None]:
    """The test sets links.LINKS (one that fetches from its API app in process); put back."""
    old = links.LINKS
    yield
    links.LINKS = old


def test_the_run_tabs_downloads_work_with_reads_closed(tmp_path: Path, ui_links: None) -> None:
    settings, url, app, key = _closed(tmp_path)
    job_id, _ = _seed_checkpoint(url, settings.resolved_artifact_dir)
    links.LINKS = links.LinkStore(transport=httpx.ASGITransport(app=app))
    with TestClient(app) as api, _ui() as ui:
        # The API's own URLs, what the header linked before: 401 for a browser (no key).
        assert api.get(f"/api/v1/jobs/{job_id}/checkpoint").status_code == 401
        assert api.get(f"/api/v1/jobs/{job_id}/export?format=lora").status_code == 401
        hrefs = _header_links(api, key, job_id)
        assert hrefs.keys() == {"checkpoint", "export"}
        _assert_checkpoint_and_lora(ui, hrefs, job_id)
        # A token names one path: the export's is the export with its query, not the checkpoint.
        token = hrefs["export"].removeprefix("files/")
        link = links.LINKS.resolve(token)
        assert link is not None and link.path == f"/api/v1/jobs/{job_id}/export?format=lora"


def test_the_checkpoint_link_serves_the_zip_from_an_s3_store(
    tmp_path: Path, ui_links: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto_s3 import AWS_ENV, make_bucket, moto_server

    from backend.s3_store import S3Store

    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    with moto_server(tmp_path) as endpoint:
        bucket = f"s3://{make_bucket(endpoint)}/studio"
        settings, url, app, key = _closed(tmp_path, artifact_url=bucket, s3_endpoint_url=endpoint)
        job_id, relpath = _seed_checkpoint(url, tmp_path / "staging")
        S3Store(bucket, endpoint).put_checkpoint(relpath, tmp_path / "staging" / relpath)
        assert not (settings.resolved_artifact_dir / relpath).exists()  # only in the bucket
        links.LINKS = links.LinkStore(transport=httpx.ASGITransport(app=app))
        with TestClient(app) as api, _ui() as ui:
            assert api.get(f"/api/v1/jobs/{job_id}/checkpoint").status_code == 401
            _assert_checkpoint_and_lora(ui, _header_links(api, key, job_id), job_id)

        # Redirect mode: the API answers an artifact with a presigned bucket URL; the link
        # passes that redirect on (no key in it) for the browser to follow.
        png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
        (tmp_path / "node.png").write_bytes(png)
        S3Store(bucket, endpoint).put_file(ART, tmp_path / "node.png")
        _, _, redirecting, key = _closed(
            tmp_path / "redirect",
            artifact_url=bucket,
            s3_endpoint_url=endpoint,
            artifact_redirect=True,
        )
        links.LINKS = links.LinkStore(transport=httpx.ASGITransport(app=redirecting))
        href = links.link_for(ApiClient("http://api.test", api_key=key), ART)
        with _ui() as ui:
            answer = ui.get(f"/ui/{href}", follow_redirects=False)
        assert answer.status_code == 307, answer.text
        location = answer.headers["location"]
        assert location.startswith(endpoint) and "X-Amz-Signature=" in location
        assert key not in location and httpx.get(location).content == png


class _Upstream(httpx.AsyncBaseTransport):
    """An API answering a big zip in CHUNKS chunks, counting how many it has produced."""

    CHUNKS = 64

    def __init__(self) -> None:
        self.produced = 0
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(self.CHUNKS):
                self.produced += 1
                yield b"z" * 65536

        return httpx.Response(
            200,
            headers={
                "content-type": "application/zip",
                "content-disposition": 'attachment; filename="job-3-epoch-000001.zip"',
                "x-internal": "not passed on",
            },
            content=chunks(),
        )


def _request(token: str) -> Request:
    return Request({"type": "http", "method": "GET", "path_params": {"token": token}})


def test_a_big_download_streams_through_without_being_held_whole(ui_links: None) -> None:
    upstream = _Upstream()
    links.LINKS = links.LinkStore(transport=upstream)
    token = links.LINKS.issue("http://api.test", "the-key", "/api/v1/jobs/3/checkpoint")

    async def fetch() -> tuple[StreamingResponse, int, int]:
        answer = await links.serve(_request(token))
        assert isinstance(answer, StreamingResponse)
        body = answer.body_iterator
        first = await anext(body)
        produced_at_first = upstream.produced
        total = len(first)
        async for chunk in body:
            total += len(chunk)
        return answer, produced_at_first, total

    answer, produced_at_first, total = asyncio.run(fetch())
    # The first chunk went out while the API had produced only the first of 64.
    assert produced_at_first == 1
    assert total == _Upstream.CHUNKS * 65536
    assert answer.headers["content-disposition"] == 'attachment; filename="job-3-epoch-000001.zip"'
    assert "x-internal" not in answer.headers
    (sent,) = upstream.requests
    assert str(sent.url) == "http://api.test/api/v1/jobs/3/checkpoint"
    assert sent.headers["x-api-key"] == "the-key" and sent.headers["accept-encoding"] == "identity"


def test_an_api_that_does_not_answer_is_a_clear_502(ui_links: None) -> None:
    class Down(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("connection refused", request=request)

    links.LINKS = links.LinkStore(transport=Down())
    token = links.LINKS.issue("http://api.test", "the-key", "/api/v1/jobs/3/checkpoint")
    answer = asyncio.run(links.serve(_request(token)))
    assert answer.status_code == 502 and bytes(answer.body).decode() == links.UNREACHABLE


def test_the_page_can_ask_whether_a_link_still_works(
    api: tuple[FastAPI, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET <ui>/files/<token>/alive (frontend/static/links.js asks it beside a click): 204 while
    the token works, 404 with the reason after, and it never reaches the API."""
    _, key = api
    token = links.LINKS.issue("http://api.test", key, f"/api/v1/artifacts/{ART}")
    with _ui() as ui:
        answer = ui.get(f"/ui/files/{token}/alive")
        assert answer.status_code == 204 and answer.content == b""
        now = links.time.monotonic()
        monkeypatch.setattr(links.time, "monotonic", lambda: now + links.TTL_SECONDS + 1)
        gone = ui.get(f"/ui/files/{token}/alive")
        assert gone.status_code == 404 and gone.text == links.EXPIRED
        assert ui.get("/ui/files/not-a-token/alive").status_code == 404


def test_the_link_lifetime_is_the_operators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(links.TTL_ENV, "90")
    assert links.ttl_seconds() == 90
    monkeypatch.delenv(links.TTL_ENV)
    assert links.ttl_seconds() == 600
    for bad, says in (("ten", "whole number"), ("0", "at least 1")):
        monkeypatch.setenv(links.TTL_ENV, bad)
        with pytest.raises(ValueError, match=says):
            links.ttl_seconds()
