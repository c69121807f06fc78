"""What the tabs share: the API context, the user's key, the selected job, the tab switcher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from frontend.client import Job
from frontend.context import UiContext
from frontend.render import job_label

TAB_RUNS, TAB_RUN, TAB_TREE, TAB_COMPARE = "runs", "run", "tree", "compare"
TAB_PLAYGROUND = "playground"
TAB_EXPERIMENTS = "experiments"

# Timer events never show Gradio's progress overlay (it would flash every few seconds).
QUIET: dict[str, Any] = {"show_progress": "hidden", "queue": True}


@dataclass
class Shared:
    ctx: UiContext
    key: gr.State  # the user's API key, for this tab's session only
    me: gr.State  # GET /me of that key: {"key_id", "name", "role"}, or None
    job: gr.State  # id of the job picked in any tab (int | None)
    tabs: gr.Tabs


def event_data(evt: gr.EventData | None) -> dict[str, Any]:
    """The payload a `trigger(name, data)` call in js_on_load sent."""
    data = getattr(evt, "_data", None)
    return dict(data) if isinstance(data, dict) else {}


def as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


SMALL_MODELS = frozenset({"digits", "digits-ddim", "tiny-random"})


def small_images(config: dict[str, Any] | None) -> bool:
    """The shipped models draw 16x16 images: show them pixelated rather than blurred."""
    return str((config or {}).get("model", "")) in SMALL_MODELS


def job_choices(jobs: list[Job]) -> list[tuple[str, int]]:
    """Dropdown entries (Gradio shows them as text, never as HTML)."""
    return [(job_label(job), job.id) for job in jobs]
