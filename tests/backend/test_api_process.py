"""The API process: importing and serving backend.main never loads torch, the workers or any of
the core beyond its torch-free config and submit checks; the UI is mounted only through the treegrpo.ui hook;
OpenAPI at /docs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import api_testing as at
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient

import backend.main
import backend.ui_hook
from backend.api import create_app

ALLOWED_CORE = {
    "treegrpo",
    "treegrpo.algorithm_names",
    "treegrpo.config",
    "treegrpo.config.docs",
    "treegrpo.config.fields",
    "treegrpo.config.merge",
    "treegrpo.config.presets",
    "treegrpo.config.resolve",
    "treegrpo.config.run",
    "treegrpo.config.sections",
    "treegrpo.config.values",
    "treegrpo.epochs",
    "treegrpo.errors",
    "treegrpo.presets",
    "treegrpo.prompts",
    "treegrpo.rewards",
    "treegrpo.rewards.names",
    "treegrpo.secrets",  # the redaction of secret-named fields: re and treegrpo.errors only
    # The operator's lists and the size rules, checked at submit (issue 23): torch-free.
    "treegrpo.egress",
    "treegrpo.file_roots",
    "treegrpo.hub",
    "treegrpo.atlas",  # a tree's thumbnail atlas, built once for old trees: PIL only
    "treegrpo.job_limits",
    "treegrpo.models",
    "treegrpo.models.sizes",
    # Prompt datasets (issue 25): the config's {dataset: ...} reference, and the import, preview
    # and pinning in the API. Torch-free (pyarrow is imported only where a file is read).
    "treegrpo.datasets",
    "treegrpo.datasets.errors",
    "treegrpo.datasets.progress",  # an import's progress reports: time and pathlib only
    "treegrpo.datasets.ref",
    "treegrpo.datasets.sources",
    "treegrpo.datasets.table",
    "treegrpo.datasets.writer",
    # Experiments (issue 26): a grid expanded at submit and its statistics served. Pure Python
    # (scipy is imported only inside mean_interval, which the API never calls).
    "treegrpo.config.grid",
    "treegrpo.statistics",
    # Whether a tree node can be branched again (issue 28), one rule for the API's answers and
    # the branch job: no imports at all.
    "treegrpo.branchable",
}

PROBE = """
import json, sys
import backend.main
import backend.ui_hook
from fastapi.testclient import TestClient
client = TestClient(backend.main.app)
for path in ("/api/v1/models", "/api/v1/rewards", "/api/v1/presets", "/api/v1/prompt-sets",
             "/api/v1/jobs", "/openapi.json"):
    assert client.get(path).status_code == 200, path
assert client.post("/api/v1/jobs", json={"preset": "tiny-treegrpo"}).status_code == 401
print(json.dumps(sorted(sys.modules)))
"""


def test_the_api_process_never_imports_torch_workers_or_the_core(
    tmp_path: Path, sqlite_url: str
) -> None:
    env = {
        **os.environ,
        "TREEGRPO_DATA_DIR": str(tmp_path / "data"),
        "TREEGRPO_DATABASE_URL": sqlite_url,
        "TREEGRPO_BROKER_URL": "",
        "TREEGRPO_ARTIFACT_DIR": str(tmp_path / "artifacts"),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    modules = set(json.loads(done.stdout.strip().splitlines()[-1]))
    for heavy in ("torch", "diffusers", "transformers", "peft", "accelerate", "workers"):
        assert heavy not in modules
        assert not any(name.startswith(heavy + ".") for name in modules), heavy
    core = {name for name in modules if name == "treegrpo" or name.startswith("treegrpo.")}
    assert core <= ALLOWED_CORE, core - ALLOWED_CORE


class _Entry:
    def __init__(self, name: str, mounter: object) -> None:
        self.name, self.value, self._mounter = name, f"fake:{name}", mounter

    def load(self) -> object:
        return self._mounter


def test_mount_ui_uses_the_treegrpo_ui_entry_point(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str
) -> None:
    def mount(app: FastAPI) -> None:
        app.add_api_route("/ui", lambda: PlainTextResponse("dashboard"), include_in_schema=False)

    seen: list[str] = []

    def fake_entry_points(*, group: str) -> list[_Entry]:
        seen.append(group)
        return [_Entry("dashboard", mount)]

    monkeypatch.setattr(backend.ui_hook, "entry_points", fake_entry_points)
    app = create_app(at.make_settings(tmp_path, sqlite_url))
    assert backend.main.mount_ui(app) is True
    assert seen == ["treegrpo.ui"]
    client = TestClient(app)
    assert client.get("/ui").text == "dashboard"
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/ui"


def test_a_broken_ui_leaves_the_api_serving(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str
) -> None:
    def broken(app: FastAPI) -> None:
        raise ImportError("no gradio here")

    monkeypatch.setattr(
        backend.ui_hook, "entry_points", lambda *, group: [_Entry("dashboard", broken)]
    )
    app = create_app(at.make_settings(tmp_path, sqlite_url))
    assert backend.main.mount_ui(app) is False
    client = TestClient(app)
    assert client.get("/api/v1/health").status_code == 200
    assert client.get("/", follow_redirects=False).headers["location"] == "/docs"


def test_openapi_and_docs(tmp_path: Path, sqlite_url: str) -> None:
    client = TestClient(create_app(at.make_settings(tmp_path, sqlite_url)))
    assert "swagger" in client.get("/docs").text.lower()
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert paths >= {
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/cancel",
        "/api/v1/jobs/{job_id}/resume",
        "/api/v1/jobs/{job_id}/metrics",
        "/api/v1/jobs/{job_id}/events",
        "/api/v1/jobs/{job_id}/logs",
        "/api/v1/jobs/{job_id}/trees",
        "/api/v1/jobs/{job_id}/samples",
        "/api/v1/jobs/{job_id}/checkpoint",
        "/api/v1/trees/{tree_id}",
        "/api/v1/trees/{tree_id}/nodes/{node_id}/branch",
        "/api/v1/artifacts/{path}",
        "/api/v1/models",
        "/api/v1/rewards",
        "/api/v1/presets",
        "/api/v1/prompt-sets",
        "/api/v1/health",
        "/api/v1/ready",
    }
    assert "APIKeyHeader" in schema["components"]["securitySchemes"]


def test_catalog_lists_what_jobs_can_use(tmp_path: Path, sqlite_url: str) -> None:
    from treegrpo.config import catalog

    expected = catalog()
    client = TestClient(create_app(at.make_settings(tmp_path, sqlite_url)))
    assert client.get("/api/v1/models").json() == {"data": expected["models"]}
    assert client.get("/api/v1/rewards").json() == {"data": expected["rewards"]}
    presets = client.get("/api/v1/presets").json()["data"]
    assert {p["name"]: p["config"] for p in presets} == expected["presets"]
    sets = client.get("/api/v1/prompt-sets").json()["data"]
    assert {s["name"]: s["prompts"] for s in sets} == expected["prompt_sets"]
