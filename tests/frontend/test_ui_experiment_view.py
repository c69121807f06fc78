"""frontend/experiment_view.py: the Experiments tab's tables, SVG charts and exports, drawn from
a statistics answer written out here (escaping included)."""

from __future__ import annotations

import copy
import csv
import io

import gradio as gr
from fake_api import FakeApi
from PIL import Image

from frontend import experiment_view as view
from frontend import experiments

XSS = "<img src=x onerror=alert(1)>"


def _summary(median: float | None, low: float | None = None, high: float | None = None) -> dict:
    return {"median": median, "low": low, "high": high, "n": 2, "reached": 2 if median else 0}


def _group(name: str, final: float, cost: float) -> dict:
    curve = {"x": [0.0, 10.0, 20.0], "median": [0.7, 0.8, final], "low": [0.7, 0.78, final - 0.02]}
    curve["high"] = [0.7, 0.82, final + 0.02]
    curve["n"] = [2, 2, 2]
    return {
        "group": name,
        "runs": [f"{name} seed=0", f"{name} seed=1"],
        "final_reward": _summary(final, final - 0.02, final + 0.02),
        "cpu_seconds_per_iteration": _summary(cost),
        "seconds_per_iteration": _summary(cost / 2),
        "time_to_target": {"0.5": {"cpu_clock": _summary(10.0, 10.0, None)}},
        "curves": {"cpu_clock": curve, "wall_clock": curve, "images_seen": curve},
    }


EXPERIMENT = {
    "id": 7,
    "name": "methods",
    "evaluation": {"count": 256, "noise_seed": 0},
    "runs": [
        {"group": "tree", "status": "succeeded"},
        {"group": "tree", "status": "running"},
        {"group": XSS, "status": "succeeded"},
    ],
    "statistics": {
        "base_reward": 0.7,
        "targets": {"0.5": 0.8},
        "groups": [_group("tree", 0.9, 5.0), _group(XSS, 0.85, 8.0)],
        "ratios": [
            {
                "reference": "tree",
                "group": XSS,
                "clock": "cpu_clock",
                "level": 0.5,
                "ratio": 2.0,
                "low": 1.2,
                "high": 3.1,
                "per_seed": {"0": 1.5, "1": 2.7},
                "censored": 1,
            }
        ],
        "pareto": ["tree"],
        "pareto_points": {
            "tree": {"cpu_seconds_per_iteration": 5.0, "final_reward": 0.9},
            XSS: {"cpu_seconds_per_iteration": 8.0, "final_reward": 0.85},
        },
    },
}


def test_grid_table_rows_states_and_ranges() -> None:
    html = view.grid_table_html(EXPERIMENT)
    assert html.count("<tr data-group=") == 2
    assert "1 running, 1 succeeded" in html
    assert "0.900 [0.880-0.920]" in html
    assert "10.0 [10.0-never]" in html  # one seed never reached the target
    assert XSS not in html and "&lt;img" in html


def test_bands_pareto_and_ratios() -> None:
    stats = EXPERIMENT["statistics"]
    bands = view.bands_svg(stats, "cpu_clock")
    assert 'data-groups="2"' in bands and bands.count('class="band"') == 2
    assert bands.count('class="target"') == 1 and XSS not in bands
    pareto = view.pareto_svg(stats)
    assert pareto.count('data-front="1"') == 1 and pareto.count('class="point"') == 2
    ratios = view.ratios_table_html(stats)
    assert "2.00x [1.20-3.10]" in ratios and "0: 1.50, 1: 2.70" in ratios
    assert view.bands_svg({"groups": []}).startswith('<div class="tg-empty"')


def test_exports_csv_and_png() -> None:
    rows = list(csv.reader(io.StringIO(view.csv_text(EXPERIMENT))))
    assert rows[0][:3] == ["group", "seeds", "final_reward_median"]
    assert rows[1][:3] == ["tree", "2", "0.9"]
    assert rows[1][-1] == "10.0"  # CPU s to 50%
    assert ["tree", XSS, "cpu_clock", "0.5", "2.0", "1.2", "3.1", "1"] in rows
    png = view.png_bytes(EXPERIMENT["statistics"])
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (900, 420)


def test_a_level_most_seeds_missed_says_how_many_reached_it() -> None:
    # One of three seeds reached the level at 40.2 s: the median is not reached, the level is.
    summary = {"median": None, "low": 40.2, "high": None, "n": 3, "reached": 1}
    assert view._range(summary, 1, " s") == "median not reached (1/3 reached, fastest 40.2 s)"
    nobody = {**summary, "low": None, "reached": 0}
    assert view._range(nobody) == "not reached (0/3)"


def test_the_tab_redraws_while_runs_go_and_stops_when_they_end() -> None:
    """The Experiments tab's handlers on the mock API: its timer draws the experiment again
    while a run is queued or running, and asks for nothing to be drawn once every run ended."""
    answers = [copy.deepcopy(EXPERIMENT)]
    api = FakeApi(
        {
            ("GET", "/api/v1/experiments"): {"data": [EXPERIMENT], "count": 1},
            ("GET", "/api/v1/experiments/7"): lambda _request: answers[-1],
        }
    )
    client = api.client()
    picked = experiments.load_choices(client, None)
    assert picked["value"] == 7 and picked["choices"][0][1] == 7
    grid, *_, csv_path, png_path = experiments.tick(client, 7, "cpu_clock")  # one run running
    assert "1 running, 1 succeeded" in grid and csv_path.endswith(".csv") and png_path
    finished = copy.deepcopy(EXPERIMENT)
    finished["runs"][1]["status"] = "succeeded"
    answers.append(finished)
    skipped = experiments.tick(client, 7, "cpu_clock")
    assert len(skipped) == experiments.OUTPUTS
    assert all(update == gr.skip() for update in skipped)
    assert experiments.tick(client, None, "cpu_clock") == skipped  # nothing picked: no request
    assert api.calls("GET").count("/api/v1/experiments/7") == 2
