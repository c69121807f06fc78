"""The app builds, mounts at /ui on a FastAPI app, and finds the API over loopback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from frontend.app import build_blocks, mount
from frontend.context import UiContext, loopback_base_url


def test_mount_serves_the_dashboard_at_ui() -> None:
    app = FastAPI()
    mount(app)
    with TestClient(app) as client:
        page = client.get("/ui/")
        assert page.status_code == 200
        assert "TreeGRPO studio" in page.text
        config = client.get("/ui/config")
        assert config.status_code == 200
        # No asset from outside the machine is referenced by the page.
        for marker in ("fonts.googleapis", "cdn.jsdelivr", "unpkg.com", "cdnjs"):
            assert marker not in page.text


def test_build_blocks_alone() -> None:
    demo = build_blocks("http://127.0.0.1:8000", public_base="http://127.0.0.1:8000")
    assert demo.title == "TreeGRPO studio"


def test_loopback_base_url_uses_the_bound_socket_not_the_host_header() -> None:
    scope = {"server": ("0.0.0.0", 8000), "root_path": "/ui", "scheme": "http"}
    assert loopback_base_url(scope) == "http://127.0.0.1:8000"
    assert loopback_base_url({"server": ("::", 9), "root_path": "/pre/ui"}) == "http://[::1]:9/pre"
    assert loopback_base_url({"server": ("127.0.0.1", 8765)}) == "http://127.0.0.1:8765"
    assert loopback_base_url({"server": None}) is None


def test_context_prefers_fixed_url_then_env_then_request(monkeypatch: pytest.MonkeyPatch) -> None:
    request = SimpleNamespace(request=SimpleNamespace(scope={"server": ("127.0.0.1", 8123)}))
    monkeypatch.delenv("TREEGRPO_API_URL", raising=False)
    assert UiContext().base_url(request) == "http://127.0.0.1:8123"
    monkeypatch.setenv("TREEGRPO_API_URL", "http://127.0.0.1:9999")
    assert UiContext().base_url(request) == "http://127.0.0.1:9999"
    assert UiContext(api_url="http://127.0.0.1:1").base_url(request) == "http://127.0.0.1:1"
    client = UiContext(api_url="http://127.0.0.1:1").client(request, key="  ")
    assert client.api_key is None


def test_root_icons_do_not_404() -> None:
    """Gradio's page asks for /favicon.ico and /manifest.json at the site's root (a console 404
    on every page load before): they lead to the dashboard's own."""
    app = FastAPI()
    mount(app)
    with TestClient(app) as client:
        for path in ("/favicon.ico", "/manifest.json"):
            answer = client.get(path)
            assert answer.status_code == 200, (path, answer.status_code)
            assert str(answer.url).endswith(f"/ui{path}")
        assert "icons" in client.get("/manifest.json").json()


def test_runs_table_is_filled_on_page_load() -> None:
    """Issue 18: the table waited for the first 3 s tick; a load event fills it at once."""
    demo = build_blocks("http://127.0.0.1:8000")
    table = next(b._id for b in demo.blocks.values() if getattr(b, "elem_id", None) == "tg-jobs")
    config = demo.get_config_file()
    loads = [
        d
        for d in config["dependencies"]
        if any(t[1] == "load" for t in d["targets"]) and table in d["outputs"]
    ]
    assert loads, "no load event fills the Runs table"


def test_branch_waiting_in_the_queue_says_where() -> None:
    from ui_factories import tree_json

    from frontend.client import Tree
    from frontend.tree_handlers import Branching, branch_status

    tree = Tree.from_json(tree_json())
    text = branch_status(
        tree, Branching(job_id=5, tree_id=1, node_id=103, k=3), "queued", "2nd in the queue"
    )
    assert "Branch job #5 is queued (2nd in the queue)" in text
