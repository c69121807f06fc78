"""Issue 28's dashboard defects, each through the handler or renderer that owns it (the
browser suite checks the wiring): Compare times runs by CPU seconds where recorded and says
where it smooths; the node panel names the stored image for what it is."""

from __future__ import annotations

from ui_factories import job_json

from frontend import compare, curves, render
from frontend.client import Job


def _run(job_id: int, wall: list[float], cpu: list[float] | None) -> tuple[Job, curves.MetricStore]:
    store = curves.MetricStore(job_id=job_id)
    store.values = {
        "reward_mean": {1: 0.2, 2: 0.6, 3: 0.9},
        "wall_clock": {i + 1: w for i, w in enumerate(wall)},
        "images_seen": {1: 8.0, 2: 16.0, 3: 24.0},
    }
    if cpu is not None:
        store.values["time/epoch_cpu"] = {i + 1: c for i, c in enumerate(cpu)}
    store.values[curves.CPU_CLOCK] = curves.cpu_clock(store.values)
    return Job.from_json(job_json(id=job_id, name=f"run {job_id}")), store


def test_compare_times_runs_by_cpu_seconds_where_every_run_logged_them() -> None:
    # Same CPU work per epoch (4 s); run 2 trained while the machine was busy: its wall-clock
    # doubled. By CPU time neither is faster; by wall-clock run 1 looked 2x faster.
    quiet = _run(1, [5.0, 10.0, 15.0], [4.0, 4.0, 4.0])
    busy = _run(2, [10.0, 20.0, 30.0], [4.0, 4.0, 4.0])
    assert curves.cpu_clock(quiet[1].values) == {1: 4.0, 2: 8.0, 3: 12.0}
    charts, table = compare.compare_html([quiet, busy], "reward_mean", 0.0, 0.6)
    assert 'data-clock="cpu"' in table and "CPU time of the training process" in table
    assert table.count("1.00x") == 2  # 8 CPU s to 0.6 each
    assert "training CPU time (s)" in charts
    # One run without time/epoch_cpu (logged before it existed): wall-clock, and the table says so.
    old = _run(3, [10.0, 20.0, 30.0], None)
    _, table = compare.compare_html([quiet, old], "reward_mean", 0.0, 0.6)
    assert 'data-clock="wall"' in table and "load on the machine counts" in table
    assert "2.00x" in table


def test_compare_says_where_it_smooths() -> None:
    runs = [_run(1, [5.0, 10.0, 15.0], [4.0, 4.0, 4.0]), _run(2, [5.0, 9.0, 14.0], None)]
    _, smoothed = compare.compare_html(runs, "reward_mean", 0.6, None)
    assert "final (smoothed)" in smoothed and "best (smoothed)" in smoothed
    assert "smoothed with EMA 0.60" in smoothed
    _, raw = compare.compare_html(runs, "reward_mean", 0.0, None)
    assert "(smoothed)" not in raw and "the raw curve" in raw


def test_the_panel_offers_the_stored_image_as_the_original_not_a_full_size_one() -> None:
    """The "full-size file" link opened a 64 px file, smaller than the 176 px preview."""
    from ui_factories import tree_json

    from frontend import render
    from frontend.client import Tree

    tree = Tree.from_json(tree_json())
    panel = render.node_panel(tree, tree.all_nodes[3].id)
    assert "original file (native resolution)" in panel and "full-size" not in panel
    assert "/api/v1/artifacts/jobs/1/trees/epoch-000000/tree-00/images/3.png" in panel


def test_a_value_that_rounds_to_zero_has_no_sign() -> None:
    # The root's advantage printed "A -0.00" (defect 9).
    assert [render.fmt(v, 2, signed=True) for v in (-0.001, 0.004, -0.0, 0.3, -0.02)] == [
        "0.00",
        "0.00",
        "0.00",
        "+0.30",
        "-0.02",
    ]
    assert render.fmt(-0.0004) == "0.000" and render.fmt(None) == "-"
