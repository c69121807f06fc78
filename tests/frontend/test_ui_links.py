"""Links the browser opens itself work with reads closed (frontend/links.py): the UI's own
origin serves them with the user's key, which never appears in a URL; a token names one file
and expires; the tree panel's full-size link is one of them."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from backend import crud, migrate
from backend.api import create_app
from backend.db import session_scope
from backend.settings import Settings
from frontend import links
from frontend.client import ApiClient

ART = "jobs/1/trees/epoch-000001/tree-00/images/node-00003.png"


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
    now = links.time.monotonic()
    monkeypatch.setattr(links.time, "monotonic", lambda: now + links.TTL_SECONDS + 1)
    assert links.LINKS.resolve(token) is None
    with _ui() as ui:
        assert ui.get(f"/ui/files/{token}").status_code == 404


def test_the_dashboard_serves_links_under_its_mount() -> None:
    from frontend.app import mount

    app = FastAPI()
    mount(app)
    with TestClient(app) as client:
        assert client.get("/ui/files/unknown").status_code == 404
        assert "expired" in client.get("/ui/files/unknown").text
