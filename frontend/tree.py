"""The Tree inspector tab: pick a logged tree of a job (epoch, prompt), see it drawn on a canvas
(frontend/static/tree.js, from frontend/tree_view.py's compact JSON and one thumbnail atlas per
tree), click a node for its numbers (at once, in the page) and its big image, and "branch
again": a sample job that regrows k children from that node; the tab polls until they arrive.

This module lays out and wires; the handlers are frontend/tree_handlers.py's plain functions,
adapted here to Gradio's (request, key) inputs by `Wire`.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from frontend import access, render
from frontend import tree_handlers as h
from frontend.client import ApiClient, ApiError, Tree
from frontend.shared import QUIET, TAB_TREE, Shared, as_int, event_data
from frontend.static import read_static
from frontend.tree_handlers import Branching, Loaded

POLL_SECONDS = 2.0
TREE_TEMPLATE = read_static("tree.html")
TREE_JS = read_static("tree.js")
TREE_CSS = read_static("tree.css")
PANEL_JS = (
    read_static("tree_panel.js") + read_static("links.js") + read_static("tree_panel_links.js")
)
SKIP = gr.skip


class Wire:
    """Gradio's side of the handlers: a client per call (the user's key), outputs as tuples."""

    def __init__(self, sh: Shared) -> None:
        self.sh = sh

    def client(self, request: Any, key: str | None) -> ApiClient:
        return self.sh.ctx.client(request, key)

    def refresh_and_load(
        self, key: str | None, job: Any, loaded: Any, request: gr.Request
    ) -> tuple[Any, ...]:
        """Lists and the tree they point at, in one round trip."""
        client = self.client(request, key)
        try:
            lists = h.list_trees(client, as_int(job), loaded)
        except ApiError as exc:
            return SKIP(), SKIP(), render.notice(exc.message, "error"), SKIP(), *(SKIP(),) * 5
        pickers = (
            gr.update(choices=lists.jobs, value=lists.job_id),
            gr.update(choices=lists.trees, value=lists.tree_id),
            lists.message,
            lists.ids,
        )
        if lists.load == "clear" or (lists.job_id is None and lists.load is None):
            return *pickers, None, None, "", render.node_panel(Tree.from_json({}), None), ""
        if lists.load is None:
            return *pickers, *(SKIP(),) * 5
        shown = self._load(client, int(lists.load))
        if lists.warm:
            self.sh.ctx.in_background(h.warm, client, lists.warm)
        return *pickers, *shown

    def pick_job(
        self, value: Any, key: str | None, loaded: Any, request: gr.Request
    ) -> tuple[Any, ...]:
        """A job picked here: its lists and newest tree at once, then it is the shared job."""
        job_id = as_int(value)
        return *self.refresh_and_load(key, job_id, loaded, request), job_id

    def _load(self, client: ApiClient, tree_id: int) -> tuple[Any, ...]:
        try:
            loaded, view = h.load_tree(client, tree_id)
        except ApiError as exc:
            return None, None, render.notice(exc.message, "error"), SKIP(), ""
        return loaded, None, view, render.node_panel(loaded.tree, None), ""

    def pick_tree(self, tree_id: Any, key: str | None, request: gr.Request) -> tuple[Any, ...]:
        tid = as_int(tree_id)
        if tid is None:
            return None, None, "", render.node_panel(Tree.from_json({}), None), ""
        return self._load(self.client(request, key), tid)

    def step(self, direction: int) -> Any:
        def handler(ids: Any, loaded: Any, key: str | None, request: gr.Request) -> tuple[Any, ...]:
            target = h.step_target(ids, loaded, direction)
            if target is None:
                return (SKIP(),) * 6
            return gr.update(value=target), *self._load(self.client(request, key), target)

        return handler

    def select_node(
        self, loaded: Any, key: str | None, request: gr.Request, evt: gr.EventData
    ) -> tuple[Any, Any]:
        node_id = as_int(event_data(evt).get("node_id"))
        if not isinstance(loaded, Loaded) or node_id is None:
            return SKIP(), SKIP()
        ctx = self.sh.ctx
        return node_id, h.node_panel(
            self.client(request, key), loaded, node_id, ctx.thumbs, ctx.public_base
        )

    def branch_allowed(
        self, loaded: Any, node: Any, me: dict[str, Any] | None
    ) -> tuple[Any, Any, Any]:
        """The button offered only where a branch can start: the caller may submit, and the
        tree and node can be branched (h.branch_gate says why not, beside the button)."""
        refused = access.submit_refusal(me) if me else None
        why = h.branch_gate(loaded, as_int(node))
        ready = isinstance(loaded, Loaded) and refused is None and why is None
        return (
            gr.Button(interactive=ready),
            access.refusal_html(refused) if refused else SKIP(),
            why or "",
        )

    def start_branch(
        self, state: Any, node: Any, k: Any, key: str | None, request: gr.Request
    ) -> tuple[Any, ...]:
        node_id, kk = as_int(node), as_int(k)
        refusal = h.branch_refusal(state, node_id, key, kk)
        if refusal is not None or node_id is None or kk is None:
            return SKIP(), refusal, gr.Timer(active=False)
        branching, message = h.start_branch(self.client(request, key), state, node_id, kk)
        return branching or SKIP(), message, gr.Timer(active=branching is not None)

    def poll(
        self, branching: Any, state: Any, node: Any, key: str | None, request: gr.Request
    ) -> tuple[Any, ...]:
        if not isinstance(branching, Branching) or branching.done:
            return SKIP(), SKIP(), SKIP(), SKIP(), SKIP(), gr.Timer(active=False)
        client = self.client(request, key)
        try:
            polled = h.poll_branch(client, branching, state, as_int(node))
        except ApiError as exc:
            return SKIP(), SKIP(), SKIP(), SKIP(), render.notice(exc.message, "error"), SKIP()
        branching.done = polled.done
        if polled.loaded is None:
            return (
                branching,
                SKIP(),
                SKIP(),
                SKIP(),
                polled.message,
                gr.Timer(active=not polled.done),
            )
        ctx = self.sh.ctx
        panel = h.node_panel(client, polled.loaded, as_int(node), ctx.thumbs, ctx.public_base)
        return (
            branching,
            polled.loaded,
            polled.view,
            panel,
            polled.message,
            gr.Timer(active=not polled.done),
        )


def warm_newest_trees(sh: Shared, client: ApiClient, job_id: int) -> None:
    """In the background: a job's newest trees, laid out with their atlases (the Run tab calls
    this when a job moves on, so the inspector opens on a warm cache)."""

    def work() -> None:
        try:
            h.warm(client, h.newest_tree_ids(client, job_id))
        except ApiError:
            return

    sh.ctx.in_background(work)


def build(sh: Shared, demo: gr.Blocks, tab: gr.Tab) -> None:
    w = Wire(sh)
    tree_state, node_state, branch_state, tree_ids = (
        gr.State(None),
        gr.State(None),
        gr.State(None),
        gr.State([]),
    )
    with gr.Row(equal_height=True):
        job_pick = gr.Dropdown([], label="Job", scale=3, elem_id="tg-tree-job")
        tree_pick = gr.Dropdown(
            [], label="Logged tree (epoch, prompt)", scale=4, elem_id="tg-tree-pick"
        )
        with gr.Column(scale=0, min_width=150):
            with gr.Row():
                newer = gr.Button("◀ newer", size="sm", min_width=70, elem_id="tg-tree-newer")
                older = gr.Button("older ▶", size="sm", min_width=70, elem_id="tg-tree-older")
            refresh = gr.Button("Refresh", size="sm", min_width=90)
    tree_msg = gr.HTML()
    # A constant template: Gradio's DOM update is a no-op; tree.js redraws from the value.
    tree_html = gr.HTML(
        None,
        html_template=TREE_TEMPLATE,
        css_template=TREE_CSS,
        js_on_load=TREE_JS,
        elem_id="tg-tree",
    )
    with gr.Row():
        with gr.Column(scale=3):
            panel = gr.HTML(
                render.node_panel(Tree.from_json({}), None),
                js_on_load=PANEL_JS,
                elem_id="tg-node-panel",
            )
        with gr.Column(scale=2, min_width=260):
            gr.Markdown(
                "**Branch again** regrows children from the selected node (a `sample` job) "
                "with the policy that grew the tree: its checkpoint, the nearest one when that "
                "epoch was not kept, or the base model when the job kept none. The result says "
                "which."
            )
            k = gr.Number(
                value=3,
                precision=0,
                minimum=1,
                maximum=16,
                label="children (k)",
                elem_id="tg-branch-k",
            )
            branch = gr.Button(
                "Branch again from this node",
                variant="primary",
                interactive=False,
                elem_id="tg-branch",
            )
            branch_why = gr.HTML(elem_id="tg-branch-why")  # why the button is disabled
            branch_msg = gr.HTML(elem_id="tg-branch-msg")
    timer = gr.Timer(POLL_SECONDS, active=False)

    shown = [tree_state, node_state, tree_html, panel, branch_msg]
    for trigger in (tree_state.change, node_state.change, sh.me.change):
        trigger(
            w.branch_allowed,
            [tree_state, node_state, sh.me],
            [branch, branch_msg, branch_why],
            **QUIET,
        )
    loaded_io = ([sh.key, sh.job, tree_state], [job_pick, tree_pick, tree_msg, tree_ids, *shown])
    refresh.click(w.refresh_and_load, *loaded_io, show_progress="minimal")
    # No follow_job: while this tab is on screen only its own pick changes the shared job, and
    # the pick has loaded that job's tree already.
    sh.when_shown(TAB_TREE, w.refresh_and_load, *loaded_io, show_progress="minimal")
    # `select` fires once per pick (a Dropdown fires `input` twice). The pick loads its tree
    # and becomes the shared job in one event: each server event costs the page a walk over
    # every component any event has updated (Gradio's loading status), so no `.then` for it.
    job_pick.select(
        w.pick_job,
        [job_pick, sh.key, tree_state],
        [job_pick, tree_pick, tree_msg, tree_ids, *shown, sh.job],
        show_progress="minimal",
    )
    tree_pick.select(w.pick_tree, [tree_pick, sh.key], shown, show_progress="minimal")
    for button, direction in ((newer, -1), (older, 1)):
        button.click(w.step(direction), [tree_ids, tree_state, sh.key], [tree_pick, *shown])
    for source in (tree_html, panel):
        source.select(
            w.select_node, [tree_state, sh.key], [node_state, panel], show_progress="hidden"
        )
    branch.click(
        w.start_branch,
        [tree_state, node_state, k, sh.key],
        [branch_state, branch_msg, timer],
        concurrency_limit=1,
    )
    timer.tick(
        w.poll,
        [branch_state, tree_state, node_state, sh.key],
        [branch_state, tree_state, tree_html, panel, branch_msg, timer],
        **QUIET,
    )
