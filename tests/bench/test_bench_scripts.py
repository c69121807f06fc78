"""bench/reproduce.py (with reproduce_report.py) and bench/plotting.py: a tiny-budget smoke run
of an experiment on the tiny presets, its analysis through treegrpo/statistics.py, and the
chart helpers.

bench/ is not a package: the scripts are imported from their file paths.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from pathlib import Path
from types import ModuleType

from PIL import Image

from treegrpo.statistics import summary_text

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    """Import bench/<name>.py under its plain name (reproduce.py imports `reproduce_report`)."""
    if name in sys.modules:
        return sys.modules[name]
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


reproduce = _load("reproduce")
plotting = _load("plotting")


def _valid_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    ticks = plotting.nice_ticks(0.0, 57.0)
    assert ticks[0] <= 0.0 and ticks[-1] >= 57.0
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1 and steps.pop() in (10.0, 20.0)


def test_save_chart_writes_a_png(tmp_path: Path) -> None:
    panel = plotting.Panel("t", "x", "y")
    panel.series.append(plotting.Series("a", [0, 1, 2], [0.1, 0.5, 0.4], plotting.PALETTE[0]))
    panel.series.append(plotting.Series("b", [1], [0.3], plotting.PALETTE[1], dashed=True))
    panel.hlines.append(plotting.HLine(0.45, "target"))
    size = _valid_png(plotting.save_chart([panel, panel], tmp_path / "c.png", title="T"))
    assert size[0] > size[1] > 100


# -- the reproduction on the tiny presets -------------------------------------------------------


def test_reproduce_runs_a_grid_resumes_and_analyses(tmp_path: Path) -> None:
    args = ["--experiments", "tiny-methods", "--seeds", "0,1", "--budget", "0.5"]
    args += ["--eval-count", "4", "--eval-every", "0.1", "--out", str(tmp_path)]
    reproduce.main(args)
    lines = (tmp_path / "reproduce-digits.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    base = records[0]
    assert base["name"] == "__base__" and base["eval_count"] == 4
    runs = records[1:]
    # seed-major: every method runs seed 0 before any runs seed 1
    assert [r["name"] for r in runs] == [
        "tiny-treegrpo seed=0",
        "tiny-dancegrpo seed=0",
        "tiny-treegrpo seed=1",
        "tiny-dancegrpo seed=1",
    ]
    for run in runs:
        last = run["rows"][-1]
        assert last["cpu_clock"] > 0 and "heldout" in last  # the last epoch is always evaluated
        # the budget stops a run before an epoch would overrun it (the first always runs)
        assert len(run["rows"]) == 1 or run["rows"][-2]["cpu_clock"] <= 0.5
    reproduce.main(args)  # resumes: nothing is run twice
    assert (tmp_path / "reproduce-digits.jsonl").read_text().splitlines() == lines

    reproduce.main(["--analyse", "--out", str(tmp_path)])
    text = (tmp_path / "reproduce-digits.md").read_text()
    assert "### tiny-methods" in text
    assert f"base held-out reward {base['heldout']:.4f}" in text
    assert "| tiny-treegrpo | 2 |" in text and "| tiny-dancegrpo | 2 |" in text
    _valid_png(tmp_path / "reproduce-tiny-methods.png")


def test_the_summary_text_says_how_many_seeds_reached_a_level_the_median_missed() -> None:
    # bench/reproduce_report.py and `treegrpo experiment show` print summaries through it.
    summary = {"median": None, "low": 40.2, "high": None, "n": 3, "reached": 1}
    assert summary_text(summary, 1) == "median not reached (1/3 reached, fastest 40.2)"
    assert summary_text({**summary, "low": None, "reached": 0}) == "not reached (0/3)"
    two = {"median": 42.2, "low": 40.2, "high": None, "n": 3, "reached": 2}
    assert summary_text(two, 1) == "42.2 [40.2-never] (2/3)"
    assert summary_text(None) == "-"
