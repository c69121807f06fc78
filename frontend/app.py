"""The TreeGRPO studio dashboard: a Gradio Blocks app with its tabs (Runs, Run, Tree inspector,
Compare, Playground; see TABS) that talks to the REST API over HTTP only (frontend/client.py).

Mounted in the API process at /ui through the `treegrpo.ui` entry point:

    frontend.app:mount(app)        # backend/main.py calls it with the FastAPI app

or alone, against a running API:

    python -m frontend --api http://127.0.0.1:8000 [--host 127.0.0.1 --port 7860]

The UI has no API key of its own: the user pastes theirs in the key field; it is kept in the
server-side session of this tab only (gr.State: never written to the browser's storage, gone
when the tab closes or reloads) and sent with every call. Its role (GET /me) decides which
actions the page offers. Without one, everything readable shows and actions say that a key is
needed. Offline by design: no CDN, no analytics.
"""

from __future__ import annotations

import argparse
import html
import os
from collections.abc import Callable
from typing import Any

import gradio as gr
from starlette.requests import Request
from starlette.responses import RedirectResponse

from frontend import compare, datasets, experiments, links, playground, polling, run, runs, tree
from frontend.access import me_of, who_html
from frontend.client import ApiClient
from frontend.context import MOUNT_PATH, UiContext
from frontend.shared import (
    TAB_COMPARE,
    TAB_DATASETS,
    TAB_EXPERIMENTS,
    TAB_PLAYGROUND,
    TAB_RUN,
    TAB_RUNS,
    TAB_TREE,
    Shared,
    with_client,
)
from frontend.style import CSS

TITLE = "TreeGRPO studio"
# The tabs in order: (id, label, build(sh, demo, tab)). A new tab is one more line here.
TABS: tuple[tuple[str, str, Callable[[Shared, gr.Blocks, gr.Tab], Any]], ...] = (
    (TAB_RUNS, "Runs", runs.build),
    (TAB_RUN, "Run", run.build),
    (TAB_TREE, "Tree inspector", tree.build),
    (TAB_COMPARE, "Compare", compare.build),
    (TAB_PLAYGROUND, "Playground", playground.build),
    (TAB_EXPERIMENTS, "Experiments", experiments.build),
    (TAB_DATASETS, "Datasets", datasets.build),
)
KEY_PENDING = '<span class="tg-key-status tg-key-pending">Connecting to the studio…</span>'


def _key_status(
    key: str | None, reads_closed: bool = False, me: dict[str, Any] | None = None
) -> str:
    key = (key or "").strip()
    hint = f"…{key[-4:]}" if len(key) >= 12 else ""
    if key and me is None:
        return (
            f'<span class="tg-key-status tg-key-needed">Key {html.escape(hint)} set, but the API '
            "does not know it (unknown or revoked): nothing can be changed with it.</span>"
        )
    if key:
        return (
            f'<span class="tg-key-status">Key {html.escape(hint)} set:{who_html(me)} Every '
            "request, reads included, is sent with it. It is kept for this tab only, never in "
            "the browser's storage: paste it again after a reload.</span>"
        )
    if reads_closed:
        return (
            '<span class="tg-key-status tg-key-needed">Reads need a key on this studio: '
            "nothing can be shown until you paste your API key here.</span>"
        )
    return (
        '<span class="tg-key-status">No key: read-only. Paste your API key to submit, cancel, '
        "resume or branch.</span>"
    )


def _reads_closed(client: ApiClient) -> bool:
    try:
        return client.reads_need_key()
    except Exception:  # unreachable: the tabs say so themselves
        return False


def greet(client: ApiClient) -> Any:
    """The key note at page load (a key pasted before the load event ran has its note)."""
    if client.api_key:
        return gr.skip()
    return _key_status(None, _reads_closed(client))


def remember(client: ApiClient) -> tuple[str, dict[str, Any] | None, str]:
    """A pasted key: kept for this tab's session, with its role (GET /me) and its note."""
    value = client.api_key or ""
    found = me_of(client) if value else None
    return value, found, _key_status(value, not value and _reads_closed(client), found)


def build_blocks(api_url: str | None = None, *, public_base: str = "") -> gr.Blocks:
    """The dashboard. `api_url`: where the server-side callbacks reach the API (None: found per
    request, see frontend/context.py); `public_base`: the API origin the browser loads images
    and downloads from ("" when the UI is served by the API itself)."""
    ctx = UiContext(api_url=api_url, public_base=public_base)
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        # The key lives in this tab's session only: anything kept in the browser's storage
        # would be readable by whoever reads that storage (its old "encryption" used a secret
        # the server's public config handed to anyone).
        key = gr.State("")
        me = gr.State(None)  # GET /me of the key: {"key_id", "name", "role"} or None
        job = gr.State(None)
        # The tab on screen, and per tab a box that changes when it comes on screen, kept by
        # polling.poll_only_when_shown (hidden boxes, not States: a State set by that unqueued
        # event fires no change).
        shown = gr.Textbox(TAB_RUNS, visible=False, elem_id="tg-shown")
        opened = {
            tab_id: gr.Textbox("", visible=False, elem_id=f"tg-opened-{tab_id}")
            for tab_id, _, _ in TABS
        }
        followed = {
            tab_id: gr.Textbox(f"{tab_id}:0", visible=False, elem_id=f"tg-followed-{tab_id}")
            for tab_id, _, _ in TABS
        }
        with gr.Row(equal_height=True):
            gr.HTML(
                f'<div class="tg-header"><h1>{TITLE}</h1><span class="tg-muted">RL fine-tuning '
                "of diffusion models: runs, live curves, trees</span></div>",
                scale=3,
            )
            with gr.Column(scale=2, min_width=320):
                key_box = gr.Textbox(
                    label="API key",
                    type="password",
                    placeholder="paste your key (treegrpo api-key create NAME)",
                    elem_id="tg-api-key",
                )
                # Until the page's load event has answered, the note says so: a key pasted
                # before then must not have its note overwritten by a late "No key".
                key_note = gr.HTML(KEY_PENDING, elem_id="tg-key-note")
        with gr.Tabs(selected=TAB_RUNS, elem_id="tg-tabs") as tabs:
            sh = Shared(
                ctx=ctx,
                key=key,
                me=me,
                job=job,
                tabs=tabs,
                shown=shown,
                opened=opened,
                followed=followed,
            )
            built = {}
            for tab_id, label, build in TABS:
                with gr.Tab(label, id=tab_id, elem_id=f"tg-tab-{tab_id}") as tab:
                    build(sh, demo, tab)
                built[tab_id] = tab
        polling.poll_only_when_shown(demo, tabs, built, shown, opened, first=TAB_RUNS)
        polling.follow_job_on_screen(job, shown, followed)

        demo.load(with_client(ctx, greet), [key_box], key_note)
        key_box.change(with_client(ctx, remember), [key_box], [key, me, key_note])
    return demo


def launch_kwargs() -> dict[str, Any]:
    # No run history: Gradio would keep every call's inputs and outputs in the browser's
    # localStorage (the user's API key among the inputs; each drawn tree, up to ~0.5 MB, among
    # the outputs), re-serialising up to 100 of them after every event: ~1.5 s of the page's
    # main thread per big-tree redraw.
    return {"css": CSS, "theme": gr.themes.Default(), "footer_links": [], "run_history": False}


# Events of different sessions run side by side (Gradio's default is one at a time per event);
# submit and branch keep a limit of one each.
CONCURRENCY = 8


def mount(app: Any) -> Any:
    """Mount the dashboard on the API's FastAPI app at /ui (the `treegrpo.ui` entry point)."""
    demo = build_blocks().queue(default_concurrency_limit=CONCURRENCY)
    add_root_icons(app)
    links.add_route(app, MOUNT_PATH)  # before Gradio's mount: the first matching route answers
    return gr.mount_gradio_app(app, demo, path=MOUNT_PATH, **launch_kwargs())


# Gradio's page asks for these at the site's root whatever its mount path; without an answer
# every page load logged 404s in the browser console.
ROOT_ICONS = ("/favicon.ico", "/manifest.json")


def add_root_icons(app: Any) -> None:
    """Answer /favicon.ico and /manifest.json at the root of the app the dashboard is mounted on
    with a redirect to the dashboard's own (unless the app serves them itself)."""

    def redirect_to(path: str) -> Any:
        def redirect(request: Request) -> RedirectResponse:
            root = str(request.scope.get("root_path") or "").rstrip("/")
            return RedirectResponse(f"{root}{MOUNT_PATH}{path}", status_code=307)

        return redirect

    taken = {getattr(route, "path", None) for route in getattr(app, "routes", [])}
    for path in ROOT_ICONS:
        if path not in taken:
            app.add_api_route(
                path, redirect_to(path), methods=["GET", "HEAD"], include_in_schema=False
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m frontend", description="The TreeGRPO studio dashboard, served alone."
    )
    parser.add_argument(
        "--api",
        default=os.environ.get("TREEGRPO_API_URL", "http://127.0.0.1:8000"),
        help="the API's root URL (default: $TREEGRPO_API_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--public-api",
        default=None,
        help="the API's root as the browser reaches it, for images and downloads (default: --api)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to serve on")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")
    args = parser.parse_args(argv)
    api = args.api.rstrip("/")
    import uvicorn

    app = standalone_app(api, public_base=(args.public_api or api).rstrip("/"))
    uvicorn.run(app, host=args.host, port=args.port)


def standalone_app(api: str, public_base: str) -> Any:
    """The dashboard alone at the site's root, on an app of its own (not Gradio's launch): its
    links (frontend/links.py, at /files/<token>) need a route before Gradio's, as under /ui."""
    from fastapi import FastAPI

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    links.add_route(app, "/")
    demo = build_blocks(api, public_base=public_base).queue(default_concurrency_limit=CONCURRENCY)
    return gr.mount_gradio_app(app, demo, path="", **launch_kwargs())


if __name__ == "__main__":
    main()
