"""The evaluation table (frontend/evaluation.py) from metric points, as pure functions."""

from __future__ import annotations

import gradio as gr
from fake_api import FakeApi
from ui_factories import job_json

from frontend.client import Job
from frontend.evaluation import EvalView, comparison_body, parse_table, redraw, table_html

XSS = "<img src=x onerror=alert(1)>"


def _row(step: int, row: int, job: int, epoch: int, ema: int, cells: dict[str, tuple]) -> list:
    points = [
        (step, "evaluation/row", float(row)),
        (step, "evaluation/job", float(job)),
        (step, "evaluation/epoch", float(epoch)),
        (step, "evaluation/ema", float(ema)),
        (step, "evaluation/confidence", 0.95),
        (step, "eval/reward_mean", 0.5),  # the summary metrics are not table cells
    ]
    for reward, stats in cells.items():
        for stat, value in zip(("mean", "std", "n", "low", "high"), stats, strict=True):
            points.append((step, f"evaluation/{reward}/{stat}", float(value)))
    return points


def test_rows_come_in_table_order_with_their_cells() -> None:
    points = _row(1, 1, 7, 20, 1, {"digit_judge": (0.9, 0.1, 10, 0.83, 0.97)})
    points += _row(
        0, 0, 0, 0, 0, {"digit_judge": (0.7, 0.2, 10, 0.56, 0.84), "contrast": (1, 0, 10, 1, 1)}
    )
    table = parse_table(points)
    assert table is not None
    assert [row.label for row in table.rows] == ["base model", "job #7, epoch 20 (EMA)"]
    assert table.rewards == ["digit_judge", "contrast"]
    assert table.rows[1].cells["digit_judge"].n == 10
    assert "contrast" not in table.rows[1].cells
    html = table_html(table)
    # The best mean of a column is bold; half-width 0.97 - 0.9 = 0.07; a missing cell is a dash.
    assert "<b>0.9000 <span class='tg-muted'>± 0.0700</span></b>" in html
    assert "0.7000 <span class='tg-muted'>± 0.1400</span>" in html and "<td>–</td>" in html
    assert "95% Student t interval over 10 held-out prompts" in html


def test_a_half_written_row_is_left_out_and_no_rows_is_no_table() -> None:
    assert parse_table([(0, "eval/reward_mean", 1.0)]) is None
    half = _row(0, 0, 0, 0, 0, {"r": (1, 0, 3, 1, 1)})[:-1]  # no `high` yet
    table = parse_table(half)
    assert table is not None and table.rows[0].cells == {}
    assert "Evaluating" in table_html(None, "running")
    assert "wrote no table" in table_html(None, "succeeded")


def test_reward_names_are_escaped() -> None:
    table = parse_table(_row(0, 0, 0, 0, 0, {XSS: (1, 0, 2, 1, 1)}))
    assert table is not None
    html = table_html(table)
    assert XSS not in html and "&lt;img src=x" in html


def test_the_comparison_of_a_train_job_is_its_checkpoint_against_the_base_model() -> None:
    job = Job.from_json(job_json(id=12, name="x" * 200, config={"eval": {"steps": 40}}))
    body = comparison_body(job)
    assert body["kind"] == "evaluate"
    assert body["params"] == {"models": [{}, {"job_id": 12}]}
    assert body["config"] == {"eval": {"steps": 40}}  # the run's own eval settings
    assert len(body["name"]) == 200 and body["name"].startswith("x")


def test_a_tick_redraws_the_table_and_never_shows_it() -> None:
    """A tick sent while an evaluate job was shown, answered after a train job was opened,
    drew the old table back over the train job (the browser story failed so in about 1
    fresh-clone CI run in 4). A tick now changes the table's contents only."""
    job = job_json(id=5, kind="evaluate", status="running")
    rows = {"data": [], "count": 0}
    api = FakeApi(
        {
            ("GET", "/api/v1/jobs/5"): job,
            ("GET", "/api/v1/jobs/5/metrics"): rows,
        }
    )
    state = EvalView(5, False, 0)
    view, html, button, timer = redraw(api.client(), state, 5)
    assert view.job_id == 5 and "Evaluation" in html["value"]
    assert "visible" not in html and button == gr.skip() and timer.active is True
    # Another job picked since: nothing changes and the timer stops.
    assert redraw(api.client(), state, 7)[:3] == (gr.skip(),) * 3
    # A finished table stops polling.
    assert redraw(api.client(), EvalView(5, True, 3), 5)[3].active is False
