"""Only the tab on screen polls.

Each tab refreshes itself with a gr.Timer. Left running in hidden tabs they made about 1.4
events a second with nothing happening, each a POST to Gradio's queue and most a request to
the API, competing with training for the machine's cores. Here every refresh timer of a tab
(one created active) runs only while its tab is shown: switching tabs, by a click or by an
event (a double-click on a run opens the Run tab), stops the others' and starts its own.
Timers a tab creates inactive (the tree inspector's branch poll) stay under that tab's control.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import gradio as gr

from frontend.static import read_static


def walk(block: Any) -> Iterator[Any]:
    """Every block inside `block` (depth first)."""
    for child in getattr(block, "children", None) or []:
        yield child
        yield from walk(child)


MANAGED = "_tg_shown_only"  # marks a refresh timer that runs only while its tab is shown


def refresh_timers(tab: gr.Tab) -> list[gr.Timer]:
    """The timers of `tab` that run by default (its refresh timers; once managed here, the
    ones this module starts and stops)."""
    return [
        b for b in walk(tab) if isinstance(b, gr.Timer) and (b.active or getattr(b, MANAGED, False))
    ]


def timer_states(timers: Mapping[str, list[gr.Timer]], shown: str | None) -> list[Any]:
    """One update per timer, tab by tab: active only in the `shown` tab."""
    return [gr.Timer(active=tab_id == shown) for tab_id, owned in timers.items() for _ in owned]


def poll_only_when_shown(
    demo: gr.Blocks,
    tabs: gr.Tabs,
    built: Mapping[str, gr.Tab],
    shown: gr.Textbox,
    opened: Mapping[str, gr.Textbox],
    *,
    first: str,
) -> None:
    """Start each tab's refresh timers only while it is shown (`first` is shown at load), and
    keep `shown` (the id of the tab on screen) and `opened` (per tab, a box that takes a new
    value each time that tab comes on screen) for the loaders of Shared.when_shown."""
    timers = {tab_id: refresh_timers(tab) for tab_id, tab in built.items()}
    for tab_id, owned in timers.items():
        for timer in owned:
            setattr(timer, MANAGED, True)
            timer.active = tab_id == first
    flat = [timer for owned in timers.values() for timer in owned]
    # The tab now shown, read from the page (Tabs.change carries no value) into a hidden box.
    read = gr.Textbox(visible=False, elem_id="tg-shown-tab")

    switches = itertools.count(1)

    def switch(tab_elem_id: str | None) -> list[Any]:
        tab_id = (tab_elem_id or "").removeprefix("tg-tab-") or None
        # Only the shown tab's box changes, so only its loaders fire: a switch costs the page
        # one tab's events, not every tab's.
        mark = str(next(switches))
        boxes = [mark if name == tab_id else gr.skip() for name in opened]
        return [*timer_states(timers, tab_id if tab_id in timers else None), tab_id, *boxes]

    tabs.change(
        switch,
        [read],
        [*flat, shown, *opened.values()],
        js=read_static("shown_tab.js"),
        show_progress="hidden",
        queue=False,
    )


def follow_job_on_screen(
    job: gr.State, shown: gr.Textbox, followed: Mapping[str, gr.Textbox]
) -> None:
    """When the shared `job` changes, bump the `followed` box of the tab on screen (its value is
    "<tab id>:<count>"), in the page itself: no server event, so Gradio adds no component to
    the list of updated ones that it walks on every later event."""
    boxes = list(followed.values())
    job.change(None, [shown, *boxes], boxes, js=read_static("follow_job.js"))
