"""bench/efficiency.py and bench/ablation.py: tiny-budget smoke runs on the tiny presets, plus
the small pure helpers they rest on (smoothing, crossing times, ticks, the budget stop).

bench/ is not a package: the scripts are imported from their file paths.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import re
import statistics
import sys
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    """Import bench/<name>.py under its plain name (ablation.py imports `efficiency` so)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


efficiency = _load("efficiency")
ablation = _load("ablation")
plotting = _load("plotting")


def _valid_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


# -- helpers -------------------------------------------------------------------------------------


def test_trailing_mean_averages_the_last_window_values() -> None:
    # window 2: 1 -> 1; (1+3)/2 = 2; (3+5)/2 = 4
    assert efficiency.trailing_mean([1.0, 3.0, 5.0], 2) == [1.0, 2.0, 4.0]
    assert efficiency.trailing_mean([], 5) == []


def test_first_crossing_and_value_at() -> None:
    xs, ys = [1.0, 2.0, 3.0], [0.1, 0.5, 0.4]
    assert efficiency.first_crossing(xs, ys, 0.45) == 2.0
    assert math.isinf(efficiency.first_crossing(xs, ys, 0.9))
    assert efficiency.value_at(xs, ys, 2.5) == 0.5  # last point at or before 2.5
    assert efficiency.value_at(xs, ys, 0.5) is None


def test_crossing_counts_only_full_windows() -> None:
    xs, smoothed = [1.0, 2.0, 3.0, 4.0], [0.9, 0.5, 0.6, 0.8]
    # The first point averages one epoch only: with a window of 2 the crossing comes at x = 4.
    assert efficiency.crossing(xs, smoothed, 0.7, window=2) == 4.0
    assert math.isinf(efficiency.crossing(xs[:1], smoothed[:1], 0.7, window=2))


def test_spread_formats_median_min_max_and_not_reached() -> None:
    assert efficiency.spread([1.0, 3.0, 2.0], "{:.1f}") == "2.0 [1.0-3.0]"
    assert efficiency.spread([4.0], "{:.1f}") == "4.0"
    assert efficiency.spread([1.0, math.inf, math.inf], "{:.1f}", ">60") == ">60 [1.0->60]"


def test_recorder_stops_before_an_epoch_would_overrun_the_budget() -> None:
    recorder = efficiency.Recorder(budget_s=10.0)
    assert not recorder.should_stop()  # the first epoch always runs
    recorder.on_epoch_end(1, {"wall_clock": 6.0, "time/epoch": 3.0})
    assert not recorder.should_stop()  # 6 + 3 <= 10
    recorder.on_epoch_end(2, {"wall_clock": 8.0, "time/epoch": 3.0})
    assert recorder.should_stop()  # 8 + 3 > 10


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


# -- the scripts on the tiny presets ------------------------------------------------------------


def test_efficiency_runs_every_method_and_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    budget = 0.4
    efficiency.main(
        [
            "--preset-family",
            "tiny",
            "--budget",
            str(budget),
            "--seeds",
            "0,1",
            "--methods",
            "treegrpo,dancegrpo",
            "--anchor-groups",
            "--no-warmup",
            "--retries",
            "0",
            "--idle-wait",
            "0",
            "--out",
            str(tmp_path),
        ]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    ratio = r"([<>]?\d+\.\d\dx|n/a)"
    assert re.fullmatch(rf"tree_vs_dance_time_to_target: {ratio}", lines[-2]), lines[-2]
    assert re.fullmatch(rf"tree_vs_dance_seconds_per_iteration: {ratio}", lines[-1]), lines[-1]
    assert lines[-1] != "tree_vs_dance_seconds_per_iteration: n/a"

    saved = json.loads((tmp_path / "efficiency-tiny.json").read_text())
    assert saved["tree_vs_dance_seconds_per_iteration"] == lines[-1].split(": ")[1]
    assert (tmp_path / "efficiency-tiny.txt").read_text().strip().splitlines()[-1] == lines[-1]
    _valid_png(tmp_path / "efficiency-tiny.png")

    methods = ["treegrpo", "dancegrpo", "dancegrpo-matched", "flowgrpo-matched"]
    assert [m["method"] for m in saved["methods"]] == methods
    images = {m["method"]: m["images_per_iteration"] for m in saved["methods"]}
    assert images == {"treegrpo": 8, "dancegrpo": 8, "dancegrpo-matched": 8, "flowgrpo-matched": 8}
    # TreeGRPO and DanceGRPO run every seed, the others the first one only.
    assert [(r["method"], r["seed"]) for r in saved["runs"]] == [
        *((m, 0) for m in methods),
        ("treegrpo", 1),
        ("dancegrpo", 1),
    ]
    # The target of a seed: its base model's held-out reward plus half of DanceGRPO's median
    # held-out gain, a run's final level being the mean of its last 3 evaluations.
    bases = {int(k): v for k, v in saved["base_gallery_reward"].items()}
    gains = [
        r["curve"]["heldout_smoothed"][-1] - bases[r["seed"]]
        for r in saved["runs"]
        if r["method"] == "dancegrpo"
    ]
    gain = statistics.median(gains)
    assert saved["target_gain"] == pytest.approx(gain)
    for seed, base in bases.items():
        assert saved["target_by_seed"][str(seed)] == pytest.approx(base + 0.5 * gain)
    for run in saved["runs"]:
        # The time to target: the first epoch whose mean of 3 held-out evaluations (from the
        # third evaluation on) reaches the seed's target.
        curve, goal = run["curve"], saved["target_by_seed"][str(run["seed"])]
        pairs = list(zip(curve["wall_clock"], curve["heldout_smoothed"], strict=True))[2:]
        expected = next((t for t, v in pairs if v >= goal), None)
        assert run["time_to_target"] == expected
    for run in saved["runs"]:
        curve = run["curve"]
        epochs = len(curve["epoch"])
        assert epochs == run["epochs"] >= 1
        assert all(len(values) == epochs for values in curve.values())
        assert curve["wall_clock"] == sorted(curve["wall_clock"])
        # The run stops before an epoch would overrun, so only the first can pass the budget.
        assert epochs == 1 or curve["wall_clock"][-2] <= budget
        assert 0.0 <= run["gallery_reward"] <= 1.0
        # A held-out evaluation after every epoch, outside the training clock.
        assert all(0.0 <= v <= 1.0 for v in curve["heldout"])
        assert run["seconds_per_iteration"] > 0
    assert saved["equal_wall_clock"] == min(r["final_wall_clock"] for r in saved["runs"])

    # Re-analysis of the saved runs trains nothing and reproduces the figures.
    again = efficiency.main(
        ["--reanalyse", str(tmp_path / "efficiency-tiny.json"), "--out", str(tmp_path / "again")]
    )
    assert again["target_reward"] == pytest.approx(saved["target_reward"])
    assert (
        again["tree_vs_dance_seconds_per_iteration"] == saved["tree_vs_dance_seconds_per_iteration"]
    )
    assert [r["time_to_target"] for r in again["runs"]] == [
        r["time_to_target"] for r in saved["runs"]
    ]
    _valid_png(tmp_path / "again" / "efficiency-tiny.png")


def test_ablation_reports_both_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ablation.main(["--preset-family", "tiny", "--quick", "--seeds", "0", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "Table 3 shape" in out and "Table 4 shape" in out
    assert re.search(r"^\| 4 \| 3 \| 64 \| 128 \|", out, re.MULTILINE)  # k=4: 2 prompts x 64
    assert "paper direction k=2 < k=3 <= k=4 on final training reward" in out

    saved = json.loads((tmp_path / "ablation-tiny-quick.json").read_text())
    assert list(saved["summary"]) == ["k2", "k3", "k4", "shift", "fixed"]
    assert {n: s["leaves_per_tree"] for n, s in saved["summary"].items()} == {
        "k2": 8,
        "k3": 27,
        "k4": 64,
        "shift": 27,
        "fixed": 27,
    }
    windows = {r["config"]: r["curve"]["window_start"] for r in saved["runs"]}
    assert windows["fixed"] == [0.0, 0.0]
    assert windows["shift"] == [0.0, 1.0]
    assert all(r["epochs"] == 2 for r in saved["runs"])
    _valid_png(tmp_path / "ablation-tiny-quick.png")
    assert (tmp_path / "ablation-tiny-quick.txt").exists()
