"""The Compare tab: several runs' reward curves overlaid against training wall-clock and against
images seen (e.g. TreeGRPO vs DanceGRPO on the same preset), with a time-to-reward table."""

from __future__ import annotations

from typing import Any

import gradio as gr

from frontend import curves, render
from frontend.charts import Series, line_chart_svg
from frontend.client import ApiClient, ApiError, Job
from frontend.shared import QUIET, Shared, as_int, job_choices

REFRESH_SECONDS = 5.0
MAX_RUNS = 10


def _series_label(job: Job) -> str:
    name = job.name or "(unnamed)"
    return f"#{job.id} {name} ({job.algorithm})"


def fetch_run(client: ApiClient, job_id: int, metric: str) -> tuple[Job, curves.MetricStore]:
    job = client.get_job(job_id)
    store = curves.MetricStore(job_id=job_id)
    for _ in range(20):
        since = store.last_step
        page = client.metrics(
            job_id, names=[metric, curves.WALL_CLOCK, curves.IMAGES_SEEN], since_step=since
        )
        store.add(page.points)
        store.names.update(page.names)
        if len(page.points) >= page.count or store.last_step == since:
            break
    return job, store


def compare_html(
    runs: list[tuple[Job, curves.MetricStore]],
    metric: str,
    smoothing: float,
    target: float | None,
) -> tuple[str, str]:
    """(charts, table) for the runs."""
    label = curves.reward_label(metric)
    by_clock, by_images, by_epoch = [], [], []
    summaries = []
    for job, store in runs:
        name = _series_label(job)
        by_clock.append(Series(name, *curves.xy(store.values, metric, curves.WALL_CLOCK)))
        by_images.append(Series(name, *curves.xy(store.values, metric, curves.IMAGES_SEEN)))
        by_epoch.append(Series(name, *curves.xy(store.values, metric)))
        summaries.append(
            curves.summarise_run(store.values, metric, target=None, smoothing=smoothing)
        )
    goal = target if target is not None else curves.auto_target(s.final for s in summaries)
    rows = []
    for job, store in runs:
        s = curves.summarise_run(store.values, metric, target=goal, smoothing=smoothing)
        rows.append((job, s))
    reached = [s.seconds_to_target for _, s in rows if s.seconds_to_target]
    slowest = max(reached) if reached else None
    table_rows = [
        render.CompareRow(
            job=job,
            final_reward=s.final,
            best_reward=s.best,
            target=goal,
            seconds_to_target=s.seconds_to_target,
            images_to_target=s.images_to_target,
            seconds_per_epoch=s.seconds_per_epoch,
            speedup=(slowest / s.seconds_to_target) if slowest and s.seconds_to_target else None,
        )
        for job, s in rows
    ]
    kwargs: dict[str, Any] = {
        "smoothing": smoothing,
        "width": 620,
        "height": 300,
        "legend": True,
    }
    charts = (
        '<div class="tg-charts" id="tg-compare-charts">'
        + line_chart_svg(
            by_clock,
            title=f"{label} vs training time",
            x_label="training wall-clock (s)",
            chart_id="wall_clock",
            x_from_zero=True,
            empty_message="pick runs above",
            **kwargs,
        )
        + line_chart_svg(
            by_images,
            title=f"{label} vs images seen",
            x_label="images seen",
            chart_id="images_seen",
            x_from_zero=True,
            empty_message="pick runs above",
            **kwargs,
        )
        + line_chart_svg(
            by_epoch,
            title=f"{label} vs epoch",
            x_label="epoch",
            chart_id="epoch",
            empty_message="pick runs above",
            integer_x=True,
            **kwargs,
        )
        + "</div>"
    )
    return charts, render.compare_table(table_rows, metric=metric)


def default_runs(jobs: list[Job]) -> list[int]:
    """The newest finished-or-running train job of each algorithm (the head-to-head view)."""
    picked: dict[str, int] = {}
    for job in jobs:  # newest first
        if job.kind == "train" and job.status in (
            "succeeded",
            "running",
            "cancelled",
            "interrupted",
        ):
            picked.setdefault(job.algorithm, job.id)
    return list(picked.values())[:4]


def build(sh: Shared, demo: gr.Blocks, tab: gr.Tab) -> None:
    with gr.Row(equal_height=True):
        runs = gr.Dropdown(
            [],
            multiselect=True,
            label="Runs to compare",
            scale=5,
            elem_id="tg-compare-runs",
            max_choices=MAX_RUNS,
        )
        metric = gr.Dropdown(
            ["reward_mean"],
            value="reward_mean",
            label="Reward",
            scale=2,
            allow_custom_value=True,
            elem_id="tg-compare-metric",
        )
    with gr.Row(equal_height=True):
        smoothing = gr.Slider(0.0, 0.99, value=0.6, step=0.01, label="Smoothing (EMA)", scale=3)
        # A Textbox, not a Number: empty must mean "automatic" (a Number shows and sends 0).
        target = gr.Textbox(
            "",
            label="Target reward (empty: the lowest final reward of the runs)",
            placeholder="automatic",
            scale=3,
            elem_id="tg-compare-target",
        )
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90)
    charts = gr.HTML(elem_id="tg-compare")
    table = gr.HTML(elem_id="tg-compare-table")
    timer = gr.Timer(REFRESH_SECONDS)

    def choices(key: str | None, chosen: Any, request: gr.Request) -> Any:
        try:
            jobs = sh.ctx.client(request, key).list_jobs(kind="train", limit=200).jobs
        except ApiError:
            return gr.update()
        value = [v for v in (chosen or []) if as_int(v) is not None] or default_runs(jobs)
        return gr.update(choices=job_choices(jobs), value=value)

    def update(
        chosen: Any,
        metric_value: Any,
        smooth: float,
        goal: Any,
        key: str | None,
        request: gr.Request,
    ) -> tuple[Any, Any, Any]:
        ids = [i for i in (as_int(v) for v in (chosen or [])) if i is not None]
        metric_name = str(metric_value or "reward_mean")
        text = str(goal or "").strip()
        try:
            wanted = float(text) if text else None
        except ValueError:
            return (
                render.notice(f"The target reward {text!r} is not a number.", "error"),
                "",
                gr.skip(),
            )
        client = sh.ctx.client(request, key)
        loaded = []
        names: set[str] = set()
        try:
            for job_id in ids:
                job, store = fetch_run(client, job_id, metric_name)
                names |= store.names
                loaded.append((job, store))
        except ApiError as exc:
            return render.notice(exc.message, "error"), "", gr.skip()
        chart_html, table_html = compare_html(loaded, metric_name, float(smooth or 0), wanted)
        rewards = curves.reward_names(names) or ["reward_mean"]
        return chart_html, table_html, gr.update(choices=rewards, value=metric_name)

    inputs = [runs, metric, smoothing, target, sh.key]
    outputs = [charts, table, metric]
    for trigger in (demo.load, refresh.click, tab.select):
        trigger(choices, [sh.key, runs], runs).then(update, inputs, outputs)
    for event in (runs.change, metric.select, smoothing.release, target.submit, target.blur):
        event(update, inputs, outputs, **QUIET)

    def tick(
        chosen: Any,
        metric_value: Any,
        smooth: float,
        goal: Any,
        key: str | None,
        request: gr.Request,
    ) -> tuple[Any, Any, Any]:
        ids = [i for i in (as_int(v) for v in (chosen or [])) if i is not None]
        if not ids:
            return gr.skip(), gr.skip(), gr.skip()
        try:
            jobs = [sh.ctx.client(request, key).get_job(i) for i in ids]
        except ApiError:
            return gr.skip(), gr.skip(), gr.skip()
        if not any(j.active for j in jobs):
            return gr.skip(), gr.skip(), gr.skip()
        return update(chosen, metric_value, smooth, goal, key, request)

    timer.tick(tick, inputs, outputs, **QUIET)
