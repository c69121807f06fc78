"""The Compare tab: several runs' reward curves overlaid against training wall-clock and against
images seen (e.g. TreeGRPO vs DanceGRPO on the same preset), with a time-to-reward table; where
each run's time goes per epoch (rollout / reward / update); and their held-out galleries side by
side at one epoch (same prompts, same seeds: the images differ only by the policy)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from frontend import curves, render
from frontend.charts import Series, line_chart_svg
from frontend.client import ApiClient, ApiError, Job, NotFound, Sample
from frontend.context import UiContext
from frontend.shared import QUIET, TAB_COMPARE, Shared, as_int, job_choices, small_images
from frontend.thumbs import GALLERY_PX

PHASES = ("time/rollout", "time/reward", "time/update")
CLOCKS = (curves.WALL_CLOCK, curves.CPU_EPOCH)

REFRESH_SECONDS = 5.0
MAX_RUNS = 10
RUN_LETTERS = "ABCDEFGHIJ"  # one per run (MAX_RUNS)


def _series_label(job: Job) -> str:
    name = job.name or "(unnamed)"
    return f"#{job.id} {name} ({job.algorithm})"


def fetch_run(client: ApiClient, job_id: int, metric: str) -> tuple[Job, curves.MetricStore]:
    job = client.get_job(job_id)
    store = curves.MetricStore(job_id=job_id)
    for _ in range(20):
        since = store.last_step
        page = client.metrics(
            job_id,
            names=[metric, *CLOCKS, curves.IMAGES_SEEN, *PHASES],
            since_step=since,
        )
        store.add(page.points)
        store.names.update(page.names)
        if len(page.points) >= page.count or store.last_step == since:
            break
    store.values[curves.CPU_CLOCK] = curves.cpu_clock(store.values)
    return job, store


def compare_html(
    runs: list[tuple[Job, curves.MetricStore]],
    metric: str,
    smoothing: float,
    target: float | None,
) -> tuple[str, str]:
    """(charts, table) for the runs."""
    label = curves.reward_label(metric)
    # CPU seconds of the training process where every run logged them: wall-clock would
    # charge a run for whatever else the machine was doing meanwhile.
    clock = curves.timing_clock(store.values for _, store in runs) if runs else curves.WALL_CLOCK
    by_clock, by_images, by_epoch = [], [], []
    summaries = []
    for job, store in runs:
        name = _series_label(job)
        by_clock.append(Series(name, *curves.xy(store.values, metric, clock)))
        by_images.append(Series(name, *curves.xy(store.values, metric, curves.IMAGES_SEEN)))
        by_epoch.append(Series(name, *curves.xy(store.values, metric)))
        summaries.append(
            curves.summarise_run(
                store.values, metric, target=None, smoothing=smoothing, clock=clock
            )
        )
    goal = target if target is not None else curves.auto_target(s.final for s in summaries)
    rows = []
    for job, store in runs:
        s = curves.summarise_run(
            store.values, metric, target=goal, smoothing=smoothing, clock=clock
        )
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
    cpu = clock == curves.CPU_CLOCK
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
            title=f"{label} vs training {'CPU time' if cpu else 'time'}",
            x_label="training CPU time (s)" if cpu else "training wall-clock (s)",
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
    return charts, render.compare_table(
        table_rows, metric=metric, cpu_time=cpu, smoothing=smoothing
    )


def phase_chart_svg(runs: list[tuple[Job, curves.MetricStore]]) -> str:
    """Mean seconds per epoch of each run in rollout, reward and update, as stacked bars."""
    colours = {"time/rollout": "#1f77b4", "time/reward": "#ff7f0e", "time/update": "#2ca02c"}
    rows = []
    for job, store in runs:
        means = []
        for phase in PHASES:
            series = store.values.get(phase, {})
            means.append(sum(series.values()) / len(series) if series else 0.0)
        rows.append((job, means))
    if not any(sum(m) for _, m in rows):
        return (
            '<div class="tg-empty" id="tg-phase-chart">No per-phase timing logged yet '
            "(time/rollout, time/reward, time/update).</div>"
        )
    left, bar_h, gap, width = 230, 20, 10, 820
    longest = max(sum(m) for _, m in rows) or 1.0
    scale = (width - left - 90) / longest
    height = 34 + len(rows) * (bar_h + gap) + 24
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="tg-phase-chart" class="chart" '
        f'data-runs="{len(rows)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="ui-sans-serif, system-ui, sans-serif" '
        'font-size="11" role="img" aria-label="seconds per epoch by phase">'
        '<text x="0" y="14" font-size="13" font-weight="600" fill="#202124">'
        "Seconds per epoch by phase (mean over the epochs logged)</text>"
    ]
    for i, (job, means) in enumerate(rows):
        y = 30 + i * (bar_h + gap)
        out.append(
            f'<text x="{left - 8}" y="{y + 14}" text-anchor="end" fill="#3c4043">'
            f"{render.esc(_series_label(job)[:38])}</text>"
        )
        x = float(left)
        for phase, value in zip(PHASES, means, strict=True):
            w = value * scale
            out.append(
                f'<rect class="phase" data-job-id="{job.id}" data-phase="{phase}" '
                f'data-seconds="{value:.4f}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
                f'height="{bar_h}" fill="{colours[phase]}"><title>'
                f"{render.esc(phase.split('/')[1])}: {value:.2f} s</title></rect>"
            )
            x += w
        out.append(f'<text x="{x + 6:.1f}" y="{y + 14}" fill="#3c4043">{sum(means):.2f} s</text>')
    ly = height - 8
    for j, phase in enumerate(PHASES):
        lx = left + j * 110
        out.append(
            f'<rect x="{lx}" y="{ly - 9}" width="12" height="10" fill="{colours[phase]}"/>'
            f'<text x="{lx + 16}" y="{ly}" fill="#3c4043">{phase.split("/")[1]}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def gallery_epochs(pages: list[list[int]]) -> list[int]:
    """The gallery epochs every run has (the galleries can be set side by side there)."""
    if not pages:
        return []
    common = set(pages[0])
    for epochs in pages[1:]:
        common &= set(epochs)
    return sorted(common)


def side_by_side_html(
    runs: list[tuple[Job, list[Sample]]],
    epoch: int | None,
    *,
    sources: dict[str, str],
    pixelated: bool,
) -> str:
    """The runs' held-out galleries at `epoch` as a grid of cards, one per prompt, each holding
    every run's image of it side by side (a table of one prompt a row made a 6,700 px page for
    40 prompts)."""
    if len(runs) < 2:
        return '<div class="tg-empty" id="tg-side-by-side">Pick two or more runs.</div>'
    if epoch is None:
        return (
            '<div class="tg-empty" id="tg-side-by-side">These runs have no gallery epoch in '
            "common.</div>"
        )
    seeds = {j.config.get("seed") for j, _ in runs}
    prompts = {tuple(x.prompt for x in samples) for _, samples in runs}
    same = len(seeds) == 1 and len(prompts) == 1
    note = (
        "Same held-out prompts and seeds: the images differ only by the policy."
        if same
        else "Careful: the runs differ in seed or held-out prompts, so the images also differ "
        "by their noise."
    )
    pix = ' class="tg-pixelated"' if pixelated else ""
    legend = "".join(
        f'<span class="tg-sbs-run" data-job-id="{j.id}"><b>{letter}</b> '
        f"{render.esc(_series_label(j))}</span>"
        for letter, (j, _) in zip(RUN_LETTERS, runs, strict=False)
    )
    cards = []
    count = max(len(samples) for _, samples in runs)
    for i in range(count):
        prompt = next((s[i].prompt for _, s in runs if i < len(s)), "")
        cells = []
        for letter, (job, samples) in zip(RUN_LETTERS, runs, strict=False):
            if i >= len(samples):
                cells.append(f'<div class="tg-sbs-cell" data-job-id="{job.id}">-</div>')
                continue
            item = samples[i]
            src = sources.get(item.image_url or "") or ""
            image = f'<img src="{render.esc(src)}" alt=""{pix}>' if src else "no image"
            cells.append(
                f'<div class="tg-sbs-cell" data-job-id="{job.id}">{image}<div>'
                f"<b>{letter}</b> {render.fmt(item.reward)}</div></div>"
            )
        cards.append(
            f'<figure class="tg-sbs-card"><figcaption class="tg-prompt">{render.esc(prompt)}'
            f'</figcaption><div class="tg-sbs-row">{"".join(cells)}</div></figure>'
        )
    return (
        f'<div id="tg-side-by-side" data-epoch="{epoch}" data-same="{int(same)}">'
        f'<div class="tg-gallery-title">Held-out galleries at epoch {epoch}</div>'
        f'<div class="tg-muted">{render.esc(note)} Each card is one prompt; under each image '
        "its run's letter and reward.</div>"
        f'<div class="tg-sbs-legend">{legend}</div>'
        f'<div class="tg-sbs-grid" style="--tg-runs:{len(runs)}">{"".join(cards)}</div></div>'
    )


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


def _ids(chosen: Any) -> list[int]:
    return [i for i in (as_int(v) for v in (chosen or [])) if i is not None]


def galleries(ctx: UiContext, client: ApiClient, chosen: Any, wanted: Any) -> tuple[Any, Any]:
    """(gallery epoch picker, the runs' held-out galleries side by side at that epoch)."""
    try:
        jobs = []
        for i in _ids(chosen):
            try:
                jobs.append(client.get_job(i))
            except NotFound:
                continue  # deleted since it was picked
        common = gallery_epochs([client.samples(j.id, limit=1).epochs for j in jobs])
        epoch = as_int(wanted)
        if epoch not in common:
            epoch = common[-1] if common else None
        runs = [
            (j, client.samples(j.id, epoch=epoch).samples if epoch is not None else [])
            for j in jobs
        ]
    except ApiError as exc:
        return gr.skip(), render.notice(exc.message, "error")
    urls = [x.image_url for _, samples in runs for x in samples]
    html = side_by_side_html(
        runs,
        epoch,
        sources=ctx.thumbs.many(client, urls, GALLERY_PX),
        pixelated=any(small_images(j.config) for j in jobs),
    )
    return gr.update(choices=common, value=epoch), html


def choices(client: ApiClient, chosen: Any) -> Any:
    """The train runs to pick from (fresh whenever the tab is shown); a deleted run drops out
    of the selection; none picked: the newest run of each algorithm."""
    try:
        jobs = client.list_jobs(kind="train", limit=200).jobs
    except ApiError:
        return gr.update()
    listed = {j.id for j in jobs}
    value = [v for v in (chosen or []) if as_int(v) in listed] or default_runs(jobs)
    return gr.update(choices=job_choices(jobs), value=value)


def update(
    client: ApiClient, chosen: Any, metric_value: Any, smooth: float, goal: Any
) -> tuple[Any, Any, Any]:
    """(charts, time-to-target table and phase chart, reward picker)."""
    metric_name = str(metric_value or "reward_mean")
    text = str(goal or "").strip()
    try:
        wanted = float(text) if text else None
    except ValueError:
        message = render.notice(f"The target reward {text!r} is not a number.", "error")
        return message, "", gr.skip()
    loaded = []
    names: set[str] = set()
    try:
        for job_id in _ids(chosen):
            try:
                job, store = fetch_run(client, job_id, metric_name)
            except NotFound:
                continue  # deleted since it was picked: the list drops it on its refresh
            names |= store.names
            loaded.append((job, store))
    except ApiError as exc:
        return render.notice(exc.message, "error"), "", gr.skip()
    chart_html, table_html = compare_html(loaded, metric_name, float(smooth or 0), wanted)
    rewards = curves.reward_names(names) or ["reward_mean"]
    return (
        chart_html,
        table_html + phase_chart_svg(loaded),
        gr.update(choices=rewards, value=metric_name),
    )


def tick(
    client: ApiClient, chosen: Any, metric_value: Any, smooth: float, goal: Any
) -> tuple[Any, Any, Any]:
    """The timer (while the tab is shown): redraw only while a picked run still trains."""
    ids = _ids(chosen)
    if not ids:
        return gr.skip(), gr.skip(), gr.skip()
    try:
        jobs = [client.get_job(i) for i in ids]
    except ApiError:
        return gr.skip(), gr.skip(), gr.skip()
    if not any(j.active for j in jobs):
        return gr.skip(), gr.skip(), gr.skip()
    return update(client, chosen, metric_value, smooth, goal)


def build(sh: Shared, demo: gr.Blocks, tab: gr.Tab) -> None:
    with gr.Row(equal_height=True):
        runs = gr.Dropdown(
            [],
            multiselect=True,
            label="Runs to compare",
            scale=5,
            # A run deleted meanwhile must not fail every event until the list refreshes.
            allow_custom_value=True,
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
    gr.Markdown("#### Held-out galleries side by side")
    gallery_epoch = gr.Dropdown(
        [], label="Gallery epoch (those every picked run has)", elem_id="tg-compare-epoch"
    )
    side = gr.HTML(elem_id="tg-compare-gallery")
    timer = gr.Timer(REFRESH_SECONDS)

    key = sh.key
    inputs = [key, runs, metric, smoothing, target]
    outputs = [charts, table, metric]
    gallery_io = ([key, runs, gallery_epoch], [gallery_epoch, side])
    # Filled when the tab comes on screen (a hidden tab loads nothing: Shared.when_shown).
    listed = [refresh.click(sh.call(choices), [key, runs], runs)]
    listed += sh.when_shown(TAB_COMPARE, sh.call(choices), [key, runs], [runs])
    for source in listed:
        source.then(sh.call(update), inputs, outputs).then(
            sh.call_ui(galleries), *gallery_io, **QUIET
        )
    for event in (runs.change, metric.select, smoothing.release, target.submit, target.blur):
        event(sh.call(update), inputs, outputs, **QUIET)
    runs.change(sh.call_ui(galleries), *gallery_io, **QUIET)
    gallery_epoch.select(sh.call_ui(galleries), *gallery_io, **QUIET)
    timer.tick(sh.call(tick), inputs, outputs, **QUIET)
