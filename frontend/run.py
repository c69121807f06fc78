"""The Run tab: one job live. Reward curves per reward against epoch and against wall-clock
(smoothed), loss / clip fraction / KL / ratio, the config, the log tail, the epoch-0 baseline
gallery beside a later epoch's, and the checkpoint and LoRA (diffusers) downloads. A gr.Timer fetches only what is new
(metrics after the last step, log bytes after the last offset) and leaves unchanged parts alone."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import gradio as gr

from frontend import curves, evaluation, render
from frontend.charts import Series, line_chart_svg
from frontend.client import API_PREFIX, ApiClient, ApiError, Job, Sample
from frontend.context import UiContext
from frontend.links import link_for
from frontend.nodes import nodes_html
from frontend.shared import (
    QUIET,
    TAB_RUN,
    Shared,
    as_int,
    job_choices,
    only_when_shown,
    small_images,
)
from frontend.static import read_static
from frontend.thumbs import GALLERY_PX

TICK_SECONDS = 2.0
LIVE = frozenset({"queued", "running", "cancelling"})  # statuses whose job still changes
HELD_OUT = "eval/reward_mean"  # the held-out gallery's mean reward
LOG_TAIL_CHARS = 48_000
MAX_METRIC_PAGES = 20
CHART_W, CHART_H = 470, 250


@dataclass
class RunView:
    """What the browser shows for the job, to skip re-sending unchanged parts."""

    job_id: int | None = None
    store: curves.MetricStore | None = None
    log_offset: int = 0
    log_text: str = ""
    epochs: tuple[int, ...] = ()
    status: str = ""


# Views a tick is updating right now: a tick that finds its view here (the previous one still
# waits on a slow API) skips, so a log chunk is never appended twice. Kept outside RunView:
# Gradio deep-copies State values, and a lock cannot be copied.
_updating: set[int] = set()
_updating_lock = threading.Lock()


def _claim(view: RunView) -> bool:
    with _updating_lock:
        if id(view) in _updating:
            return False
        _updating.add(id(view))
        return True


def _release(view: RunView) -> None:
    with _updating_lock:
        _updating.discard(id(view))


def fetch_metrics(client: ApiClient, job_id: int, store: curves.MetricStore) -> int:
    """Add every point after the store's last step (paging until the API has no more)."""
    added = 0
    for _ in range(MAX_METRIC_PAGES):
        since = store.last_step
        page = client.metrics(job_id, since_step=since)
        added += store.add(page.points)
        store.names.update(page.names)
        if len(page.points) >= page.count or store.last_step == since:
            break
    return added


def reward_charts_html(store: curves.MetricStore, smoothing: float) -> str:
    """Per reward: training-tree mean and held-out gallery mean, against epoch and against
    training wall-clock."""
    charts = []
    for title, names in curves.reward_chart_groups(store.names | set(store.values)):
        by_epoch = [Series(curves.series_label(n), *curves.xy(store.values, n)) for n in names]
        by_clock = [
            Series(curves.series_label(n), *curves.xy(store.values, n, curves.WALL_CLOCK))
            for n in names
        ]
        charts.append(
            line_chart_svg(
                by_epoch,
                title=f"{title} vs epoch",
                x_label="epoch (0: before training)",
                smoothing=smoothing,
                width=CHART_W,
                height=CHART_H,
                chart_id=f"{names[0]}:epoch",
                empty_message="waiting for the first epoch",
                integer_x=True,
            )
        )
        charts.append(
            line_chart_svg(
                by_clock,
                title=f"{title} vs wall-clock",
                x_label="training time (s)",
                smoothing=smoothing,
                width=CHART_W,
                height=CHART_H,
                chart_id=f"{names[0]}:wall_clock",
                x_from_zero=True,
                empty_message="waiting for the first epoch",
            )
        )
    return f'<div class="tg-charts" id="tg-reward-charts">{"".join(charts)}</div>' + watch_html(
        store, smoothing
    )


def watch_html(store: curves.MetricStore, smoothing: float) -> str:
    """The over-optimisation watch: the train - held-out reward gap and the held-out gallery's
    diversity per gallery epoch, flagged when the gap rises while the diversity falls."""
    charts = []
    for name, title in (
        (curves.GAP, "train − held-out reward gap"),
        (curves.DIVERSITY, "held-out gallery diversity"),
    ):
        xs, ys = curves.xy(store.values, name)
        charts.append(
            line_chart_svg(
                [Series(name, xs, ys)] if xs else [],
                title=f"{title} vs epoch",
                x_label="gallery epoch",
                smoothing=0.0,
                width=CHART_W,
                height=200,
                chart_id=name,
                empty_message="from the second gallery on",
                integer_x=True,
            )
        )
    flagged = curves.overoptimising(store.values)
    if flagged:
        a, b = flagged
        note = render.notice(
            f"Over-optimisation warning: from epoch {a} to {b} the training reward pulled away "
            "from the held-out reward while the held-out images grew more alike. The policy may "
            "be exploiting the reward; compare the galleries below.",
            "warn",
        )
    elif store.values.get(curves.GAP):
        note = '<div class="tg-muted">No sign of over-optimisation so far.</div>'
    else:
        note = ""
    return (
        f'<div id="tg-watch" data-flagged="{"1" if flagged else "0"}">'
        '<div class="tg-gallery-title">Over-optimisation watch</div>'
        f'{note}<div class="tg-charts">{"".join(charts)}</div></div>'
    )


def checks_html(store: curves.MetricStore) -> str:
    """The last epoch's correctness checks and timings; a value past its bound is flagged."""
    rows = []
    for label, name, fmt, warn in curves.CHECKS:
        if not name:  # the three phase timings in one cell
            parts = [
                curves.last_value(store.values, f"time/{p}")
                for p in ("rollout", "reward", "update")
            ]
            if all(p is None for p in parts):
                continue
            text = " / ".join("-" if p is None else f"{p:.2f}" for p in parts)
            rows.append(f"<tr><td>{label}</td><td>{text}</td></tr>")
            continue
        value = curves.last_value(store.values, name)
        if value is None:
            continue
        flagged = warn is not None and value > warn
        cls = ' class="tg-check-warn"' if flagged else ""
        rows.append(f"<tr{cls}><td>{label}</td><td>{fmt.format(value)}</td></tr>")
    if not rows:
        return ""
    epoch = store.last_step
    return (
        f'<table class="tg-checks" id="tg-checks"><caption>Checks at epoch {epoch}</caption>'
        f"{''.join(rows)}</table>"
    )


def training_charts_html(store: curves.MetricStore, smoothing: float) -> str:
    charts = []
    for title, names in curves.TRAINING_METRICS:
        series = []
        for name in names:
            xs, ys = curves.xy(store.values, name)
            if xs:
                series.append(Series(name, xs, ys))
        charts.append(
            line_chart_svg(
                series,
                title=f"{title} vs epoch",
                x_label="epoch",
                smoothing=smoothing,
                width=CHART_W,
                height=200,
                chart_id=title,
                empty_message="not logged yet",
                integer_x=True,
            )
        )
    return checks_html(store) + (
        f'<div class="tg-charts" id="tg-training-charts">{"".join(charts)}</div>'
    )


def _checkpoint_href(ctx: UiContext, client: ApiClient, job: Job) -> str | None:
    """The latest checkpoint's zip, through links.link_for as the tree panel's full-size image:
    a plain link to the API cannot carry the key, so with reads closed it answered 401."""
    if not job.checkpoint_path:
        return None
    return link_for(client, f"{API_PREFIX}/jobs/{job.id}/checkpoint", ctx.public_base)


def _export_href(ctx: UiContext, client: ApiClient, job: Job) -> str | None:
    """The LoRA download of a LoRA run with a checkpoint (its checkpoints carry the export)."""
    train = job.config.get("train")
    lora = isinstance(train, dict) and bool(train.get("lora_rank"))
    if not job.checkpoint_path or not lora:
        return None
    return link_for(client, f"{API_PREFIX}/jobs/{job.id}/export?format=lora", ctx.public_base)


def held_out(store: curves.MetricStore | None) -> tuple[float, int] | None:
    """The last held-out gallery reward and its epoch (eval/reward_mean), or None."""
    series = store.values.get(HELD_OUT, {}) if store is not None else {}
    if not series:
        return None
    epoch = max(series)
    return series[epoch], epoch


def header_html(
    ctx: UiContext, client: ApiClient, job: Job, store: curves.MetricStore | None = None
) -> str:
    """The Run tab's header; its download links are issued for `client`'s key."""
    header = render.job_header(
        job,
        checkpoint_href=_checkpoint_href(ctx, client, job),
        export_href=_export_href(ctx, client, job),
        held_out=held_out(store),
    )
    return header + nodes_html(job)


def renew_links(ctx: UiContext, client: ApiClient, state: RunView) -> Any:
    """The header again with fresh download links (the page found one expired)."""
    if state.job_id is None:
        return gr.skip()
    try:
        job = client.get_job(state.job_id)
    except ApiError:
        return gr.skip()
    return header_html(ctx, client, job, state.store)


def _gallery(ctx: UiContext, client: ApiClient, job: Job, samples: list[Sample], title: str) -> str:
    sources = ctx.thumbs.many(client, [x.image_url for x in samples], GALLERY_PX)
    return render.gallery(
        samples,
        title=title,
        asset_base=ctx.public_base,
        pixelated=small_images(job.config),
        sources=sources,
    )


def _galleries(
    ctx: UiContext, client: ApiClient, job: Job, epochs: list[int], chosen: int | None
) -> tuple[str, str]:
    if not epochs:
        empty = render.gallery([], title="Baseline", empty="No gallery yet.")
        return empty, render.gallery([], title="Latest", empty="No gallery yet.")
    first = epochs[0]
    later = chosen if chosen in epochs else epochs[-1]
    base = client.samples(job.id, epoch=first).samples
    late = client.samples(job.id, epoch=later).samples if later != first else base
    first_title = (
        "Epoch 0: the baseline, before any update" if first == 0 else f"Epoch {first} (earliest)"
    )
    return (
        _gallery(ctx, client, job, base, first_title),
        _gallery(ctx, client, job, late, f"Epoch {later}"),
    )


def _slider(epochs: list[int]) -> Any:
    if not epochs:
        return gr.update(minimum=0, maximum=1, value=0, interactive=False)
    steps = [b - a for a, b in pairwise(epochs)]
    step = min(steps) if steps else 1
    return gr.update(
        minimum=epochs[0],
        maximum=max(epochs[-1], epochs[0] + 1),
        step=max(1, step),
        value=epochs[-1],
        interactive=len(epochs) > 1,
    )


def _log_tail(text: str) -> str:
    return text[-LOG_TAIL_CHARS:]


def log_html(text: str) -> str:
    """The log tail as a scrollable block (LOG_JS keeps it scrolled to its end)."""
    if not text:
        return '<pre class="tg-log tg-log-empty">No log lines yet.</pre>'
    return f'<pre class="tg-log">{render.esc(text)}</pre>'


def list_jobs(client: ApiClient, job: Any) -> Any:
    """The picker's runs, fresh (with their statuses now)."""
    try:
        jobs = client.list_jobs(limit=100).jobs
    except ApiError:
        return gr.update()
    return gr.update(choices=job_choices(jobs), value=as_int(job))


def open_job(ctx: UiContext, client: ApiClient, job: Any, smooth: float) -> tuple[Any, ...]:
    """One job's header, charts, log and config: (view, picker, header, reward, training, log,
    config, timer). Its galleries follow (`open_galleries`): their thumbnails are most of the
    work, and the header and curves need not wait for them."""
    job_id = as_int(job)
    if job_id is None:
        return (RunView(), gr.skip(), *([gr.skip()] * 5), gr.Timer(active=False))
    try:
        found = client.get_job(job_id)
        store = curves.MetricStore(job_id=job_id)
        fetch_metrics(client, job_id, store)
        chunk = client.logs(job_id)
        epochs = client.samples(job_id, limit=1).epochs
    except ApiError as exc:
        message = render.notice(f"Could not load job #{job_id}: {exc.message}", "error")
        return (RunView(), gr.skip(), message, *([gr.skip()] * 4), gr.skip())
    view = RunView(
        job_id=job_id,
        store=store,
        log_offset=chunk.next_offset,
        log_text=_log_tail(chunk.text),
        epochs=tuple(epochs),
        status=found.status,
    )
    return (
        view,
        list_jobs(client, job_id),
        header_html(ctx, client, found, store),
        reward_charts_html(store, smooth),
        training_charts_html(store, smooth),
        log_html(view.log_text),
        json.dumps(found.config, indent=2, sort_keys=True),
        gr.Timer(active=found.status in LIVE),
    )


def open_galleries(ctx: UiContext, client: ApiClient, state: RunView) -> tuple[Any, Any, Any]:
    """The opened job's baseline and latest galleries and the epoch slider."""
    if state.job_id is None:
        return gr.skip(), gr.skip(), gr.skip()
    epochs = list(state.epochs)
    try:
        job = client.get_job(state.job_id)
        base, late = _galleries(ctx, client, job, epochs, None)
    except ApiError as exc:
        return render.notice(exc.message, "error"), gr.skip(), gr.skip()
    return base, late, _slider(epochs)


def tick(ctx: UiContext, client: ApiClient, state: RunView, smooth: float) -> tuple[Any, ...]:
    """The timer: only what is new (metrics after the last step, log bytes after the last
    offset). A finished job changes no more: its last tick stops the timer."""
    skip = gr.skip()
    if state.job_id is None or state.store is None:
        return (*(skip,) * 9, gr.Timer(active=False))
    if state.status and state.status not in LIVE and state.store.count():
        return (*(skip,) * 9, gr.Timer(active=False))
    if not _claim(state):
        return (*(skip,) * 9, skip)
    try:
        return _tick(ctx, client, state, smooth)
    finally:
        _release(state)


def _tick(ctx: UiContext, client: ApiClient, state: RunView, smooth: float) -> tuple[Any, ...]:
    skip = gr.skip()
    assert state.job_id is not None and state.store is not None
    try:
        job = client.get_job(state.job_id)
        added = fetch_metrics(client, state.job_id, state.store)
        chunk = client.logs(state.job_id, offset=state.log_offset)
        epochs = tuple(client.samples(state.job_id, limit=1).epochs)
    except ApiError:
        return (*(skip,) * 9, skip)
    changed_status = job.status != state.status
    state.status = job.status
    state.log_offset = chunk.next_offset
    out_log: Any = skip
    if chunk.text:
        state.log_text = _log_tail(state.log_text + chunk.text)
        out_log = log_html(state.log_text)
    galleries: tuple[Any, Any, Any] = (skip, skip, skip)
    if epochs != state.epochs:
        state.epochs = epochs
        base, late = _galleries(ctx, client, job, list(epochs), None)
        galleries = (base, late, _slider(list(epochs)))
    redraw = added or changed_status
    return (
        state,
        header_html(ctx, client, job, state.store),
        reward_charts_html(state.store, smooth) if redraw else skip,
        training_charts_html(state.store, smooth) if redraw else skip,
        *galleries,
        out_log,
        list_jobs(client, job.id) if changed_status else skip,
        skip,
    )


def resmooth(state: RunView, smooth: float) -> tuple[Any, Any]:
    if state.store is None:
        return gr.skip(), gr.skip()
    return reward_charts_html(state.store, smooth), training_charts_html(state.store, smooth)


def pick_epoch(ctx: UiContext, client: ApiClient, state: RunView, value: Any) -> Any:
    """The later gallery at the epoch nearest the slider's."""
    if state.job_id is None or not state.epochs:
        return gr.skip()
    wanted = as_int(value)
    nearest = min(state.epochs, key=lambda e: abs(e - (wanted or 0)))
    try:
        job = client.get_job(state.job_id)
        samples = client.samples(state.job_id, epoch=nearest).samples
    except ApiError as exc:
        return render.notice(exc.message, "error")
    return _gallery(ctx, client, job, samples, f"Epoch {nearest}")


def build(sh: Shared, demo: gr.Blocks, tab: gr.Tab) -> None:
    view = gr.State(RunView())
    with gr.Row(equal_height=True):
        picker = gr.Dropdown([], label="Job", scale=5, elem_id="tg-run-picker")
        refresh = gr.Button("Refresh list", size="sm", scale=0, min_width=120)
        smoothing = gr.Slider(
            0.0, 0.99, value=0.6, step=0.01, label="Smoothing (EMA)", scale=2,
            elem_id="tg-smoothing",
        )  # fmt: skip
    header = gr.HTML(
        '<div class="tg-empty">Pick a job above, or click one in the Runs tab.</div>',
        elem_id="tg-run-header",
        js_on_load=read_static("links.js") + read_static("run_header_links.js"),
    )
    evaluation.build(sh, demo)  # an evaluate job's table of models x rewards
    gr.Markdown("#### Reward")
    reward_html = gr.HTML(elem_id="tg-reward")
    gr.Markdown("#### Policy update")
    training_html = gr.HTML(elem_id="tg-training")
    gr.Markdown("#### Galleries")
    with gr.Row():
        with gr.Column():
            baseline_html = gr.HTML(elem_id="tg-gallery-baseline")
        with gr.Column():
            epoch = gr.Slider(0, 1, value=0, step=1, label="Epoch", elem_id="tg-gallery-epoch")
            latest_html = gr.HTML(elem_id="tg-gallery-latest")
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown("Log (tail)")
            log = gr.HTML(log_html(""), js_on_load=read_static("log.js"), elem_id="tg-log")
        with gr.Column(scale=2):
            config = gr.Code(
                label="Config (resolved, frozen)",
                language="json",
                interactive=False,
                max_lines=24,
                elem_id="tg-config",
            )
    timer = gr.Timer(TICK_SECONDS)

    key, job = sh.key, sh.job
    # The list is fetched again whenever it is shown: a picker filled once kept old statuses.
    refresh.click(sh.call(list_jobs), [key, job], picker, **QUIET)
    sh.when_shown(TAB_RUN, sh.call(list_jobs), [key, job], [picker], **QUIET)
    picker.select(lambda value: as_int(value), picker, job)  # once per pick (`input`: twice)
    parts = [header, reward_html, training_html, baseline_html, latest_html, epoch, log]
    opened = [view, picker, header, reward_html, training_html, log, config, timer]
    galleries = [baseline_html, latest_html, epoch]
    # Opened when the tab comes on screen and when the job changes while it is there (a hidden
    # Run tab loads nothing: Shared.when_shown).
    thumbnails = only_when_shown(TAB_RUN, sh.call_ui(open_galleries), len(galleries))
    for opening in sh.when_shown(
        TAB_RUN, sh.call_ui(open_job), [key, job, smoothing], opened, follow_job=True
    ):
        opening.then(thumbnails, [sh.shown, key, view], galleries, **QUIET)
    timer.tick(sh.call_ui(tick), [key, view, smoothing], [view, *parts, picker, timer], **QUIET)
    header.select(sh.call_ui(renew_links), [key, view], header, **QUIET)  # an expired link
    smoothing.release(resmooth, [view, smoothing], [reward_html, training_html], **QUIET)
    epoch.release(sh.call_ui(pick_epoch), [key, view, epoch], latest_html, **QUIET)
