"""bench/api_load.py: a tiny-budget run against PostgreSQL, and its reporting helpers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load() -> ModuleType:
    if "api_load" in sys.modules:
        return sys.modules["api_load"]
    spec = importlib.util.spec_from_file_location("api_load", BENCH / "api_load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["api_load"] = module
    spec.loader.exec_module(module)
    return module


api_load = _load()


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert api_load.percentile(values, 50) == 50.0
    assert api_load.percentile(values, 99) == 99.0
    assert api_load.percentile(values, 100) == 100.0
    assert api_load.percentile([7.0], 99) == 7.0


def test_docs_section_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    docs = tmp_path / "BENCHMARKS.md"
    docs.write_text("# Benchmarks\n\n## Rollout\n\nkeep me\n")
    result = api_load.summarise("GET /jobs", 50, 1.0, [0.01, 0.02], 0, 1.5)
    report = {
        "date": "2026-11-26",
        "machine": {"cpu": "cpu", "cpus": 2, "python": "3.11"},
        "settings": {
            "clients": 50,
            "seconds": 1.0,
            "warmup": 0.1,
            "jobs": 10,
            "workers": 1,
            "preset": "tiny-treegrpo",
            "database": "PostgreSQL",
            "with_ui": False,
        },
    }
    api_load.write_docs(docs, report, [result])
    api_load.write_docs(docs, report, [result])  # a rerun replaces its section
    text = docs.read_text()
    assert text.count(api_load.DOCS_TITLE) == 1
    assert "keep me" in text and text.index("## Rollout") < text.index(api_load.DOCS_TITLE)
    assert "| GET /jobs | 50 | 2 | 0 |" in text


@pytest.mark.integration
def test_tiny_run_reports_every_route(tmp_path: Path) -> None:
    out = tmp_path / "api_load.json"
    docs = tmp_path / "BENCHMARKS.md"
    assert (
        api_load.main(
            [
                "--clients",
                "4",
                "--seconds",
                "1",
                "--warmup",
                "0.3",
                "--jobs",
                "10",
                "--preset",
                "tiny-treegrpo",
                "--out",
                str(out),
                "--docs",
                str(docs),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    routes = {r["route"]: r for r in report["results"]}
    assert set(routes) == {"GET /jobs", "GET /jobs/{id}", "POST /jobs"}
    for result in routes.values():
        assert result["requests"] > 0 and result["errors"] == 0
        assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
        assert result["throughput"] > 0 and result["server_cpu_ms"] > 0
    assert report["settings"]["database"] == "PostgreSQL"
    assert api_load.DOCS_TITLE in docs.read_text()
