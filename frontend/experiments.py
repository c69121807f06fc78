"""The Experiments tab: pick an experiment; see its grid, reward bands, Pareto plot and paired
ratios (frontend/experiment_view.py draws them); export CSV and PNG. Refreshes while runs go.

Client calls live here, through ApiClient._json (GET /experiments, GET /experiments/{id}).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from frontend import experiment_view as view
from frontend.client import ApiClient, ApiError
from frontend.render import notice
from frontend.shared import QUIET, TAB_EXPERIMENTS, Shared, as_int

REFRESH_SECONDS = 5.0
ACTIVE = frozenset({"queued", "running", "cancelling"})
EXPORT_DIR = Path(tempfile.gettempdir()) / "treegrpo-experiment-exports"
OUTPUTS = 6  # grid, bands, Pareto plot, ratios, CSV file, PNG file


def list_experiments(client: ApiClient) -> list[dict[str, Any]]:
    return list(client._json("GET", "/experiments", params={"limit": 200}).get("data", []))


def get_experiment(client: ApiClient, experiment_id: int) -> dict[str, Any]:
    return dict(client._json("GET", f"/experiments/{experiment_id}"))


def choices(experiments: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [
        (f"#{e['id']} {e['name']} ({len(e.get('runs', []))} runs)", e["id"]) for e in experiments
    ]


def render(experiment: dict[str, Any] | None, clock: str) -> tuple[str, str, str, str]:
    """(grid table, bands, Pareto plot, ratios) HTML of one experiment."""
    if experiment is None:
        empty = notice(
            "Pick an experiment (POST /api/v1/experiments or `treegrpo experiment create`)."
        )
        return empty, "", "", ""
    stats = experiment.get("statistics") or {}
    return (
        view.grid_table_html(experiment),
        view.bands_svg(stats, clock),
        view.pareto_svg(stats),
        view.ratios_table_html(stats, clock if clock != "images_seen" else "cpu_clock"),
    )


def export_files(experiment: dict[str, Any], clock: str) -> tuple[str, str]:
    """The CSV of the tables and the PNG of the bands, written for download."""
    EXPORT_DIR.mkdir(parents=True, exist_ok=True)
    stem = EXPORT_DIR / f"experiment-{int(experiment['id'])}"
    csv_path, png_path = stem.with_suffix(".csv"), stem.with_name(f"{stem.name}-{clock}.png")
    csv_path.write_text(view.csv_text(experiment), encoding="utf-8")
    png_path.write_bytes(view.png_bytes(experiment.get("statistics") or {}, clock))
    return str(csv_path), str(png_path)


def load_choices(client: ApiClient, chosen: Any) -> Any:
    """The picker's experiments, keeping the one picked while it still exists."""
    try:
        found = list_experiments(client)
    except ApiError:
        return gr.update()
    ids = [e["id"] for e in found]
    value = as_int(chosen) if as_int(chosen) in ids else (ids[0] if ids else None)
    return gr.update(choices=choices(found), value=value)


def show(client: ApiClient, chosen: Any, axis: Any) -> tuple[Any, ...]:
    """The picked experiment drawn against `axis`, with its export files."""
    experiment_id = as_int(chosen)
    clock_name = str(axis or "cpu_clock")
    if experiment_id is None:
        return (*render(None, clock_name), gr.update(value=None), gr.update(value=None))
    try:
        experiment = get_experiment(client, experiment_id)
    except ApiError as exc:
        return notice(exc.message, "error"), "", "", "", gr.skip(), gr.skip()
    return _drawn(experiment, clock_name)


def _drawn(experiment: dict[str, Any], clock: str) -> tuple[Any, ...]:
    """Every output: the four views and the two export files."""
    return (*render(experiment, clock), *export_files(experiment, clock))


def tick(client: ApiClient, chosen: Any, axis: Any) -> tuple[Any, ...]:
    """The timer: draw again while any run of the picked experiment is queued or running;
    once none is, nothing changes and nothing is drawn."""
    skip = tuple(gr.skip() for _ in range(OUTPUTS))
    experiment_id = as_int(chosen)
    if experiment_id is None:
        return skip
    try:
        found = get_experiment(client, experiment_id)
    except ApiError:
        return skip
    if not any(run["status"] in ACTIVE for run in found.get("runs", [])):
        return skip
    return _drawn(found, str(axis or "cpu_clock"))


def build(sh: Shared, demo: gr.Blocks, tab: gr.Tab) -> None:
    with gr.Row(equal_height=True):
        picked = gr.Dropdown([], label="Experiment", scale=4, elem_id="tg-exp-pick")
        clock = gr.Radio(
            list(view.CLOCK_LABELS),
            value="cpu_clock",
            label="x axis",
            scale=3,
            elem_id="tg-exp-clock",
        )
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90)
    grid = gr.HTML(elem_id="tg-exp-grid-box")
    with gr.Row():
        bands = gr.HTML(elem_id="tg-exp-bands-box")
        pareto = gr.HTML(elem_id="tg-exp-pareto-box")
    ratios = gr.HTML(elem_id="tg-exp-ratios-box")
    with gr.Row():
        csv_file = gr.DownloadButton("Export CSV", size="sm", elem_id="tg-exp-csv")
        png_file = gr.DownloadButton("Export PNG", size="sm", elem_id="tg-exp-png")
    timer = gr.Timer(REFRESH_SECONDS)
    outputs = [grid, bands, pareto, ratios, csv_file, png_file]
    inputs = [sh.key, picked, clock]
    listed = [refresh.click(sh.call(load_choices), [sh.key, picked], picked)]
    listed += sh.when_shown(TAB_EXPERIMENTS, sh.call(load_choices), [sh.key, picked], [picked])
    for trigger in listed:
        trigger.then(sh.call(show), inputs, outputs)
    picked.change(sh.call(show), inputs, outputs, **QUIET)
    clock.change(sh.call(show), inputs, outputs, **QUIET)
    timer.tick(sh.call(tick), inputs, outputs, **QUIET)
