"""The Playground tab: one prompt and seed, N images from the base model beside N from a run's
checkpoint (the same initial noises), each with its reward.

It submits a `sample` job with `params.playground` (the source run's config, so the same model,
size and rewards), follows it while it waits and runs, then shows the two galleries the job
wrote: epoch 0 is the base model, the other epoch the checkpoint's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import gradio as gr

from frontend import render
from frontend.client import ApiClient, ApiError, Job
from frontend.context import UiContext
from frontend.shared import QUIET, TAB_PLAYGROUND, Shared, as_int, job_choices, small_images
from frontend.thumbs import GALLERY_PX

POLL_SECONDS = 0.5
TIMEOUT_SECONDS = 600.0
MAX_IMAGES = 16
FINISHED = ("succeeded", "failed", "cancelled", "interrupted", "lost")


def playground_params(
    source: int, epoch: int | None, prompt: str, seed: int, images: int
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "source_job_id": source,
        "playground": {"prompt": prompt, "seed": seed, "images": images},
    }
    if epoch is not None:
        params["checkpoint_epoch"] = epoch
    return params


def side_by_side(ctx: UiContext, client: ApiClient, source: Job, job: Job) -> str:
    """The base gallery and the checkpoint's, with each side's mean reward in its title."""
    page = client.samples(job.id, limit=2 * MAX_IMAGES)
    columns = []
    for epoch in sorted({s.epoch for s in page.samples}):
        samples = [s for s in page.samples if s.epoch == epoch]
        rewards = [s.reward for s in samples if s.reward is not None]
        mean = f", mean reward {sum(rewards) / len(rewards):.3f}" if rewards else ""
        who = "Base model" if epoch == 0 else f"Checkpoint of epoch {epoch}"
        sources = ctx.thumbs.many(client, [s.image_url for s in samples], GALLERY_PX)
        columns.append(
            '<div class="tg-play-side">'
            + render.gallery(
                samples,
                title=f"{who}{mean}",
                asset_base=ctx.public_base,
                pixelated=small_images(source.config),
                sources=sources,
            )
            + "</div>"
        )
    return f'<div class="tg-play" id="tg-play-result">{"".join(columns)}</div>'


def list_runs(client: ApiClient, job: Any) -> Any:
    """The train runs that have a checkpoint to sample (a run without one made a failed job);
    the picked run stays picked while it is listed."""
    try:
        jobs = [j for j in client.list_jobs(limit=100, kind="train").jobs if j.checkpoint_path]
    except ApiError:
        return gr.update()
    listed = {j.id for j in jobs}
    picked = as_int(job)
    return gr.update(choices=job_choices(jobs), value=picked if picked in listed else None)


def sample(
    ctx: UiContext,
    client: ApiClient,
    source_id: Any,
    epoch_text: str,
    prompt_text: str,
    seed_value: Any,
    count: Any,
) -> Iterator[tuple[str, Any]]:
    """Check, submit the playground's sample job, follow it, then show both galleries. A run
    with no checkpoint (or not the one asked for) is refused here: no job is left behind."""
    source_id = as_int(source_id)
    text = (prompt_text or "").strip()
    epoch = as_int((epoch_text or "").strip())
    if source_id is None:
        yield render.notice("Pick a run whose checkpoint to sample.", "error"), gr.update()
        return
    if not text:
        yield render.notice("Write a prompt.", "error"), gr.update()
        return
    if (epoch_text or "").strip() and epoch is None:
        yield render.notice("The checkpoint epoch must be a whole number.", "error"), gr.update()
        return
    try:
        source = client.get_job(source_id)
    except ApiError as error:
        yield render.notice(f"Could not start: {error}", "error"), gr.update()
        return
    if not source.checkpoint_path:
        why = f"Run #{source_id} has no checkpoint yet, so there is nothing to sample from"
        yield (
            render.notice(f"{why}; pick another run or wait for its first one.", "error"),
            (gr.update()),
        )
        return
    try:
        job = client.create_job(
            kind="sample",
            name=f"playground of #{source_id}",
            config=source.config,
            params=playground_params(source_id, epoch, text, int(seed_value or 0), int(count or 1)),
        )
    except ApiError as error:
        yield render.notice(f"Could not start: {error}", "error"), gr.update()
        return
    started = time.monotonic()
    while job.status not in FINISHED and time.monotonic() - started < TIMEOUT_SECONDS:
        waited = time.monotonic() - started
        yield render.notice(f"Job #{job.id} is {job.status} ({waited:.0f} s)…"), gr.update()
        time.sleep(POLL_SECONDS)
        try:
            job = client.get_job(job.id)
        except ApiError:
            continue
    if job.status != "succeeded":
        reason = job.error or f"it is still {job.status}"
        yield render.notice(f"Job #{job.id} did not finish: {reason}", "error"), gr.update()
        return
    took = time.monotonic() - started
    yield (
        render.notice(f"Job #{job.id} finished in {took:.1f} s.", "ok"),
        side_by_side(ctx, client, source, job),
    )


def build(sh: Shared, demo: gr.Blocks, tab: gr.Tab) -> None:
    gr.Markdown(
        "Sample one prompt from the base model and from a run's checkpoint, side by side, from "
        "the same initial noises, each image with its reward. Runs without a checkpoint are "
        "not listed."
    )
    with gr.Row(equal_height=True):
        picker = gr.Dropdown([], label="Run", scale=4, elem_id="tg-play-run")
        epoch_box = gr.Textbox(
            label="Checkpoint epoch (blank = latest)", scale=1, elem_id="tg-play-epoch"
        )
        refresh = gr.Button(
            "Refresh list", size="sm", scale=0, min_width=120, elem_id="tg-play-refresh"
        )
    with gr.Row(equal_height=True):
        prompt = gr.Textbox(label="Prompt", scale=4, elem_id="tg-play-prompt")
        seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, scale=1)
        images = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Images per model", scale=2)
        go = gr.Button("Sample", variant="primary", scale=0, min_width=120, elem_id="tg-play-go")
    status = gr.HTML(elem_id="tg-play-status")
    result = gr.HTML(elem_id="tg-play-result-box")

    # Filled again whenever the tab is shown: a list filled at page load only went stale.
    refresh.click(sh.call(list_runs), [sh.key, sh.job], picker, **QUIET)
    sh.when_shown(TAB_PLAYGROUND, sh.call(list_runs), [sh.key, sh.job], [picker], **QUIET)
    go.click(
        sh.call_ui(sample),
        [sh.key, picker, epoch_box, prompt, seed, images],
        [status, result],
        concurrency_limit=4,
    )
