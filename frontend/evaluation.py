"""The evaluation table of an evaluate job, in the Run tab: models (rows: the base model and
checkpoints) x eval rewards (columns), each cell the mean over the held-out prompts with its
Student t confidence interval, the layout of the TreeGRPO paper's Table 1.

The worker writes each row as metric points (workers/kinds.py `table_metrics`): at the row's
step, `evaluation/row`, `evaluation/job` (0 = the base model), `evaluation/epoch`,
`evaluation/ema`, `evaluation/confidence` and `evaluation/<reward>/{mean,std,n,low,high}`. This
module reads them back over HTTP and draws the table; a timer redraws it while the job runs.
A train job with a checkpoint gets a button that creates that comparison (its checkpoint against
the base model, with its own eval settings).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from frontend import render
from frontend.client import ApiClient, ApiError, Job
from frontend.shared import QUIET, TAB_RUN, Shared, as_int

PREFIX = "evaluation/"
STATS = ("mean", "std", "n", "low", "high")
TICK_SECONDS = 3.0
ACTIVE = ("queued", "running", "cancelling")
NAME_CHARS = 200  # a job name's limit (the API's)


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float
    n: int
    low: float
    high: float


@dataclass(frozen=True)
class Row:
    job_id: int  # 0: the base model
    epoch: int
    ema: bool
    cells: dict[str, Cell]

    @property
    def label(self) -> str:
        if self.job_id == 0:
            return "base model"
        return f"job #{self.job_id}, epoch {self.epoch}" + (" (EMA)" if self.ema else "")


@dataclass(frozen=True)
class Table:
    rows: list[Row]
    rewards: list[str]
    confidence: float


@dataclass
class EvalView:
    """The job the table shows, and whether it can still change."""

    job_id: int | None = None
    final: bool = False
    rows: int = field(default=0)


def parse_table(points: Iterable[tuple[int, str, float]]) -> Table | None:
    """The table from (step, name, value) metric points; None when no row is complete."""
    by_step: dict[int, dict[str, float]] = {}
    for step, name, value in points:
        if name.startswith(PREFIX):
            by_step.setdefault(step, {})[name[len(PREFIX) :]] = value
    rows: list[tuple[float, Row]] = []
    rewards: list[str] = []
    confidence = 0.95
    for values in by_step.values():
        if "row" not in values:
            continue
        cells = {}
        for key in values:
            reward, _, stat = key.rpartition("/")
            if stat != "mean" or not reward:
                continue
            try:
                cells[reward] = Cell(
                    mean=values[f"{reward}/mean"],
                    std=values[f"{reward}/std"],
                    n=int(values[f"{reward}/n"]),
                    low=values[f"{reward}/low"],
                    high=values[f"{reward}/high"],
                )
            except KeyError:
                continue  # a half-written row: shown once complete
            if reward not in rewards:
                rewards.append(reward)
        confidence = values.get("confidence", confidence)
        row = Row(
            job_id=int(values.get("job", 0)),
            epoch=int(values.get("epoch", 0)),
            ema=bool(values.get("ema", 0)),
            cells=cells,
        )
        rows.append((values["row"], row))
    if not rows:
        return None
    return Table([row for _, row in sorted(rows, key=lambda r: r[0])], rewards, confidence)


def fetch_table(client: ApiClient, job_id: int) -> Table | None:
    """The evaluate job's table as far as it is written (one GET of its metric points)."""
    payload = client._json("GET", f"/jobs/{int(job_id)}/metrics")
    data = payload.get("data") if isinstance(payload, Mapping) else None
    points = []
    for item in data or []:
        if not isinstance(item, Mapping):
            continue
        step, name, value = item.get("step"), item.get("name"), item.get("value")
        if isinstance(step, int) and isinstance(name, str) and isinstance(value, int | float):
            points.append((step, name, float(value)))
    return parse_table(points)


def _cell_html(cell: Cell | None, best: bool) -> str:
    if cell is None:
        return "<td>–</td>"
    half = cell.high - cell.mean
    title = render.esc(
        f"std {cell.std:.4f}; interval [{cell.low:.4f}, {cell.high:.4f}] over {cell.n} prompts"
    )
    text = f"{cell.mean:.4f} <span class='tg-muted'>± {half:.4f}</span>"
    if best:
        text = f"<b>{text}</b>"
    return f'<td title="{title}" data-reward-mean="{cell.mean:.6f}">{text}</td>'


def table_html(table: Table | None, status: str = "") -> str:
    """The table as HTML (user text escaped); the best mean of each column in bold."""
    if table is None:
        if status in ACTIVE:
            return render.notice("Evaluating: the table appears as each model finishes.")
        return render.notice("This evaluate job wrote no table.", "warn")
    best = {
        reward: max(
            (row.cells[reward].mean for row in table.rows if reward in row.cells),
            default=None,
        )
        for reward in table.rewards
    }
    head = "".join(f"<th>{render.esc(reward)}</th>" for reward in table.rewards)
    body = []
    for row in table.rows:
        cells = "".join(
            _cell_html(
                row.cells.get(reward),
                len(table.rows) > 1
                and reward in row.cells
                and row.cells[reward].mean == best[reward],
            )
            for reward in table.rewards
        )
        body.append(f"<tr><td>{render.esc(row.label)}</td>{cells}</tr>")
    prompts = {cell.n for row in table.rows for cell in row.cells.values()}
    over = f"{prompts.pop()} held-out prompts" if len(prompts) == 1 else "the held-out prompts"
    caption = (
        f"Mean ± half-width of the {table.confidence:.0%} Student t interval over {over} "
        "(a prompt's images count as one value); the best mean of each reward in bold."
    )
    return (
        '<div class="tg-table-wrap"><table class="tg-table" id="tg-evaluation-table">'
        f"<caption>{render.esc(caption)}</caption>"
        f"<thead><tr><th>model</th>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
        "</table></div>"
    )


def comparison_body(job: Job) -> dict[str, Any]:
    """POST /jobs body of an evaluate job that sets a train job's latest checkpoint against the
    base model, with that job's own config (its eval_prompts and eval.* settings)."""
    name = f"{job.name or f'job #{job.id}'} vs the base model"
    return {
        "kind": "evaluate",
        "name": name[:NAME_CHARS],
        "config": job.config,
        "params": {"models": [{}, {"job_id": job.id}]},
    }


def start_comparison(client: ApiClient, job_id: int | None) -> tuple[Any, str]:
    """Create the comparison of `job_id` (a train job with a checkpoint); (the new job's id to
    show, or a skip, and a notice)."""
    if job_id is None:
        return gr.skip(), render.notice("Pick a training job first.", "warn")
    try:
        job = client.get_job(job_id)
        if job.kind != "train" or not job.checkpoint_path:
            return gr.skip(), render.notice(
                f"Job #{job_id} has no checkpoint to evaluate yet.", "warn"
            )
        created = client._json("POST", "/jobs", body=comparison_body(job), mutating=True)
    except ApiError as exc:
        return gr.skip(), render.notice(exc.message, "warn" if exc.status == 401 else "error")
    new_id = int(created["id"])
    text = f"Created evaluate job #{new_id}: job #{job_id}'s checkpoint against the base model."
    return new_id, render.notice(text)


def polls(view: EvalView) -> bool:
    """Whether the table of `view` can still change: an evaluate job that has not ended."""
    return view.job_id is not None and not view.final


def evaluation_update(client: ApiClient, job_id: int | None) -> tuple[EvalView, Any, Any]:
    """The view, the HTML update and the comparison button's for the picked job: the table of
    an evaluate job; the button for a train job with a checkpoint; neither otherwise."""
    hidden = (EvalView(), gr.update(value="", visible=False), gr.update(visible=False))
    if job_id is None:
        return hidden
    try:
        job = client.get_job(job_id)
        if job.kind == "train":
            shown = gr.update(visible=bool(job.checkpoint_path))
            return EvalView(), gr.update(value="", visible=False), shown
        if job.kind != "evaluate":
            return hidden
        table = fetch_table(client, job_id)
    except ApiError as exc:
        notice = render.notice(exc.message, "error")
        return EvalView(), gr.update(value=notice, visible=True), gr.update(visible=False)
    html = "<h4>Evaluation</h4>" + table_html(table, job.status)
    view = EvalView(job_id, job.status not in ACTIVE, len(table.rows) if table else 0)
    return view, gr.update(value=html, visible=True), gr.update(visible=False)


def redraw(client: ApiClient, state: EvalView, job_id: int | None) -> tuple[Any, ...]:
    """A tick of the table's timer: (view, HTML, button, timer). It redraws the table's
    contents and never shows or hides anything: a tick sent before another job was picked
    and answered after that job was shown drew the old job's table back on top of it (a
    fresh-clone CI run saw it). Only `show` decides what is visible."""
    if not polls(state) or job_id != state.job_id:
        return gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False)
    view, html, _ = evaluation_update(client, state.job_id)
    contents = {k: v for k, v in html.items() if k != "visible"}
    return view, contents, gr.skip(), gr.Timer(active=polls(view))


def build(sh: Shared, demo: gr.Blocks) -> None:
    """The table's place in the Run tab, wired to the picked job (redrawn while it runs), and
    a train job's button that evaluates its checkpoint against the base model."""
    view = gr.State(EvalView())
    html = gr.HTML(visible=False, elem_id="tg-evaluation")
    with gr.Row():
        compare = gr.Button(
            "Evaluate against the base model",
            visible=False,
            size="sm",
            scale=0,
            min_width=260,
            elem_id="tg-evaluate-base",
        )
        message = gr.HTML(elem_id="tg-evaluate-msg")

    def show(job_id: Any, key: str | None, request: gr.Request) -> tuple[Any, ...]:
        update = evaluation_update(sh.ctx.client(request, key), as_int(job_id))
        return (*update, gr.Timer(active=polls(update[0])))

    def tick(state: EvalView, job: Any, key: str | None, request: gr.Request) -> tuple[Any, ...]:
        return redraw(sh.ctx.client(request, key), state, as_int(job))

    def on_compare(job_id: Any, key: str | None, request: gr.Request) -> tuple[Any, str]:
        return start_comparison(sh.ctx.client(request, key), as_int(job_id))

    # Created inactive, so it runs only while an evaluate job's table can still change (not
    # with the Run tab's refresh timers: an idle page must not post events, issue 28).
    timer = gr.Timer(TICK_SECONDS, active=False)
    outputs = [view, html, compare, timer]
    sh.when_shown(TAB_RUN, show, [sh.job, sh.key], outputs, follow_job=True)
    timer.tick(tick, [view, sh.job, sh.key], outputs, **QUIET)
    compare.click(on_compare, [sh.job, sh.key], [sh.job, message])
