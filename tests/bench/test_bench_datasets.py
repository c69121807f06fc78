"""bench/datasets.py on a tiny budget: the API imports a generated Parquet file through the
upload route, the worker-like reader draws from the stored version, and the table and the
docs section are written."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "datasets.py"


@pytest.mark.slow
def test_the_datasets_bench_runs_small(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_datasets", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    docs = tmp_path / "BENCHMARKS.md"
    docs.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    out = tmp_path / "datasets.json"
    assert bench.main(["--rows", "3000", "--epochs", "3", "--per-epoch", "8", "--out", str(out),
                       "--docs", str(docs)]) == 0  # fmt: skip
    result = bench.json.loads(out.read_text())
    assert result["rows"] == 3000 and result["worker"]["rows"] == 3000
    assert result["search_matches"] == 0  # "item 999999," is beyond 3,000 rows
    text = docs.read_text()
    assert "## Other\n\nkept" in text and "| Rows imported through" in text
