"""GET /artifacts/{path}: files inside the store only. Traversal in every spelling (literal and
encoded '..', absolute paths, backslashes, NUL, symlinks out of the store) is a 404, never a file."""

from __future__ import annotations

import http.client
from pathlib import Path

import api_testing as at
import pytest
from fastapi.testclient import TestClient

from backend.api import create_app

SECRET = b"TOP SECRET outside the store"


@pytest.fixture
def store(tmp_path: Path, sqlite_url: str) -> tuple[TestClient, Path]:
    settings = at.make_settings(tmp_path, sqlite_url)
    root = settings.resolved_artifact_dir
    (tmp_path / "secret.txt").write_bytes(SECRET)
    sibling = tmp_path / "artifacts-evil"
    sibling.mkdir()
    (sibling / "x.txt").write_bytes(SECRET)
    images = root / "jobs" / "1" / "samples" / "epoch-000000"
    images.mkdir(parents=True)
    (images / "000.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (root / "jobs" / "1" / "page.html").write_text("<script>alert(1)</script>")
    (root / "jobs" / "1" / "drawing.svg").write_text("<svg onload='alert(1)'/>")
    (root / "jobs" / "1" / "tree.json").write_text('{"nodes": []}')
    (root / "link-out.txt").symlink_to(tmp_path / "secret.txt")
    (root / "dir-out").symlink_to(tmp_path)
    (root / "evil").symlink_to(sibling)
    (root / "link-in.png").symlink_to(images / "000.png")
    return TestClient(create_app(settings)), tmp_path


def test_files_inside_the_store_are_served(store: tuple[TestClient, Path]) -> None:
    client, _ = store
    png = client.get("/api/v1/artifacts/jobs/1/samples/epoch-000000/000.png")
    assert png.status_code == 200
    assert png.content == b"\x89PNG\r\n\x1a\nfake"
    assert png.headers["content-type"] == "image/png"
    assert png.headers["x-content-type-options"] == "nosniff"
    assert client.get("/api/v1/artifacts/jobs/1/tree.json").json() == {"nodes": []}
    # A symlink whose target is inside the store is fine.
    assert client.get("/api/v1/artifacts/link-in.png").status_code == 200


def test_active_content_is_a_download_never_a_page(store: tuple[TestClient, Path]) -> None:
    client, _ = store
    for name in ("page.html", "drawing.svg"):
        answer = client.get(f"/api/v1/artifacts/jobs/1/{name}")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/octet-stream"
        assert answer.headers["content-disposition"].startswith("attachment")
        assert "sandbox" in answer.headers["content-security-policy"]


@pytest.mark.parametrize(
    "path",
    [
        "%2e%2e/secret.txt",
        "%2E%2E/secret.txt",
        "..%2fsecret.txt",
        "%2e%2e%2fsecret.txt",
        "jobs/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "jobs/1/..%2F..%2F..%2Fsecret.txt",
        "%252e%252e/secret.txt",  # double-encoded: a folder literally named %2e%2e
        "..%5csecret.txt",
        "jobs%5c..%5c..%5csecret.txt",
        "%2Fetc%2Fpasswd",
        "/etc/passwd",
        "%2F" + "%2F".join(["tmp"]),
        "secret.txt%00.png",
        "link-out.txt",
        "dir-out/secret.txt",
        "evil/x.txt",
        "jobs",
        "jobs/1",
        "",
        ".",
        "jobs/1/samples/epoch-000000/missing.png",
    ],
)
def test_traversal_and_non_files_are_404(store: tuple[TestClient, Path], path: str) -> None:
    client, _ = store
    answer = client.get(f"/api/v1/artifacts/{path}")
    assert answer.status_code == 404, (path, answer.text)
    assert SECRET not in answer.content
    assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "raw_path",
    [
        "/api/v1/artifacts/../secret.txt",
        "/api/v1/artifacts/jobs/../../secret.txt",
        "/api/v1/artifacts/./../secret.txt",
        "/api/v1/artifacts//etc/passwd",
        "/api/v1/artifacts/..\\secret.txt",
        "/api/v1/artifacts/../artifacts-evil/x.txt",
    ],
)
def test_literal_dot_segments_sent_raw_are_404(
    store: tuple[TestClient, Path], raw_path: str
) -> None:
    """HTTP clients normalise '..' away; a raw request keeps it, as an attacker's would."""
    client, _ = store
    with at.live_server(client.app) as server:  # type: ignore[arg-type]
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.putrequest("GET", raw_path, skip_accept_encoding=True)
        connection.endheaders()
        answer = connection.getresponse()
        body = answer.read()
        connection.close()
    assert answer.status == 404, (raw_path, answer.status)
    assert SECRET not in body
