"""What the tabs share: the API context, the user's key, the selected job, the tab switcher, and
the adapters that turn a plain handler into a Gradio callback.

A handler is a module-level function `handler(client, *values)`: `client` is the ApiClient of
the caller's key, `values` the event's other inputs. `sh.call(handler)` is the callback to wire
with `[sh.key, *inputs]`; a unit test calls the handler itself with a client on a mock
transport (tests/frontend).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from frontend.client import ApiClient, Job
from frontend.context import UiContext
from frontend.render import job_label
from frontend.static import read_static

TAB_RUNS, TAB_RUN, TAB_TREE, TAB_COMPARE = "runs", "run", "tree", "compare"
TAB_PLAYGROUND = "playground"
TAB_DATASETS = "datasets"
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
    shown: gr.Textbox  # id of the tab on screen (hidden; frontend/polling.py keeps it)
    # Per tab, a hidden box that changes each time that tab comes on screen (and only then).
    opened: dict[str, gr.Textbox]
    # Per tab, a hidden box that changes when the shared job changes while that tab is on
    # screen, and only then (polling.follow_job_on_screen bumps it in the page, no round trip).
    followed: dict[str, gr.Textbox]

    def when_shown(
        self,
        tab_id: str,
        callback: Callable[..., Any],
        inputs: list[Any],
        outputs: list[Any],
        *,
        follow_job: bool = False,
        **options: Any,
    ) -> Any:
        """Run `callback` (wired with `inputs`) each time tab `tab_id` comes on screen, and with
        `follow_job` also when the shared job changes while it is on screen. A hidden tab loads
        nothing, and a job change sets off no server event in hidden tabs: Gradio keeps every
        component that an event has ever updated in a list that it walks on each later event,
        snapshotting their values (about 0.3 s of main thread per job pick when six tabs'
        loaders heard the change). Returns the events, for a `.then` each."""
        events = [self.opened[tab_id].change(callback, inputs, outputs, **options)]
        if follow_job:
            events.append(self.followed[tab_id].change(callback, inputs, outputs, **options))
        return events

    def call(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """The Gradio callback of `handler(client, *values)`; wire it with [sh.key, *inputs]."""
        return with_client(self.ctx, handler)

    def call_event(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """The callback of `handler(client, event data, *values)`; wire it with [sh.key, ...]."""
        return with_event(self.ctx, handler)

    def call_ui(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """As `call`, for handlers that also need the UI context (thumbnails, public links):
        `handler(ctx, client, *values)`."""
        ctx = self.ctx

        def bound(client: ApiClient, *values: Any) -> Any:
            return handler(ctx, client, *values)

        bound.__name__ = handler.__name__
        if inspect.isgeneratorfunction(handler):

            def stream(client: ApiClient, *values: Any) -> Iterator[Any]:
                yield from handler(ctx, client, *values)

            stream.__name__ = handler.__name__
            return with_client(ctx, stream)
        return with_client(ctx, bound)


def show_tab_js(tab_id: str) -> str:
    """The js of an event that brings tab `tab_id` on screen (wire it with no inputs, no
    outputs and no server function)."""
    return read_static("show_tab.js").replace("TAB_ID", tab_id)


def with_event(ctx: UiContext, handler: Callable[..., Any]) -> Callable[..., Any]:
    """As `with_client`, for a handler of an event that carries data (a `trigger(name, data)`
    of a component's js_on_load): `handler(client, data, *values)`."""

    def call(request: gr.Request, evt: gr.EventData, key: str | None, *values: Any) -> Any:
        return handler(ctx.client(request, key), event_data(evt), *values)

    call.__name__ = handler.__name__
    return call


def with_client(ctx: UiContext, handler: Callable[..., Any]) -> Callable[..., Any]:
    """A callback taking (request, key, *values) (Gradio passes the request to the parameter
    annotated gr.Request) that calls `handler(client of that key, *values)`. A generator
    handler stays a generator (Gradio streams its yields)."""
    if inspect.isgeneratorfunction(handler):

        def stream(request: gr.Request, key: str | None, *values: Any) -> Iterator[Any]:
            yield from handler(ctx.client(request, key), *values)

        stream.__name__ = handler.__name__
        return stream

    def call(request: gr.Request, key: str | None, *values: Any) -> Any:
        return handler(ctx.client(request, key), *values)

    call.__name__ = handler.__name__
    return call


def only_when_shown(tab_id: str, callback: Callable[..., Any], outputs: int) -> Callable[..., Any]:
    """`callback` with the shown tab's id as a new first input: it runs when that id is
    `tab_id` and otherwise leaves all `outputs` as they are (a skip costs the page nothing).
    Gradio finds the request parameter from the signature and type hints, so both are
    `callback`'s with the new one in front."""

    def skipped() -> Any:
        return gr.skip() if outputs == 1 else tuple(gr.skip() for _ in range(outputs))

    if inspect.isgeneratorfunction(callback):

        def stream(shown: str | None, *args: Any, **kwargs: Any) -> Iterator[Any]:
            if shown != tab_id:
                yield skipped()
                return
            yield from callback(*args, **kwargs)

        gate: Callable[..., Any] = stream
    else:

        def call(shown: str | None, *args: Any, **kwargs: Any) -> Any:
            return callback(*args, **kwargs) if shown == tab_id else skipped()

        gate = call
    signature = inspect.signature(callback)
    first = inspect.Parameter("shown", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    gate.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[first, *signature.parameters.values()]
    )
    # typing.get_type_hints reads these, resolved in the globals of `callback` (__wrapped__).
    gate.__annotations__ = {**getattr(callback, "__annotations__", {}), "shown": "str | None"}
    gate.__wrapped__ = callback  # type: ignore[attr-defined]
    gate.__name__ = getattr(callback, "__name__", "gated")
    return gate


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
