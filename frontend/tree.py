"""The Tree inspector tab: pick a logged tree of a job (epoch, prompt), see it drawn
(frontend/tree_svg.py), click a node for its predicted image, numbers and path from the root,
and "branch again": a sample job that regrows k children from that node; the tab polls the
tree until they arrive and highlights them."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr

from frontend import access, render
from frontend.client import (
    ACTIVE_STATUSES,
    KEY_REQUIRED_MESSAGE,
    ApiClient,
    ApiError,
    Tree,
    TreeSummary,
)
from frontend.shared import QUIET, Shared, as_int, event_data, job_choices, small_images
from frontend.thumbs import PANEL_PX, TREE_PX
from frontend.tree_svg import (
    TreeLayout,
    layout_tree,
    ranked_leaves,
    render_tree_legend,
    render_tree_svg,
)

POLL_SECONDS = 2.0

# Clicks on nodes, edges or path entries select a node; the toolbar zooms (kept across
# re-renders); capture-phase listeners record which thumbnails have loaded (or failed), so
# data-images-loaded == data-images-total says the picture is complete (the tests time it).
TREE_JS = """
element.classList.add('tg-tree-view');
const svg = () => element.querySelector('svg.treegrpo-tree');
const label = () => element.querySelector('[data-zoom-label]');
const apply = () => {
  const s = svg(); if (!s) return;
  const box = element.querySelector('.tg-tree-scroll');
  // Drawn while its tab is hidden: no width to fit to yet (the observer below comes back).
  if (box && !box.clientWidth) { element.dataset.pending = '1'; return; }
  delete element.dataset.pending;
  const w = Number(s.getAttribute('width')), h = Number(s.getAttribute('height'));
  let z = element.dataset.zoom;
  if (!z || z === 'fit') {
    const room = box ? box.clientWidth - 4 : w;
    z = Math.max(0.2, Math.min(1.0, room / w));
  } else { z = Number(z); }
  s.style.width = (w * z) + 'px'; s.style.height = (h * z) + 'px';
  const l = label(); if (l) l.textContent = Math.round(z * 100) + '%';
  element.dataset.zoomValue = String(z);
};
// A big tree wider than the view even when fitted: bring its root to the middle.
const centreRoot = () => {
  const s = svg(), box = element.querySelector('.tg-tree-scroll'); if (!s || !box) return;
  if (!box.clientWidth) { element.dataset.centre = '1'; return; }
  delete element.dataset.centre;
  const z = Number(element.dataset.zoomValue || 1);
  box.scrollLeft = Math.max(0, Number(s.dataset.rootX || 0) * z - box.clientWidth / 2);
  box.scrollTop = 0;
};
// Folded subtrees: everything that has a folded node among its ancestors is hidden.
let folded = new Set();
const applyFold = () => {
  const s = svg(); if (!s) return;
  // Nothing folded now or before: leave the (possibly ~1,200) elements alone.
  if (!folded.size && !s.dataset.folded) return;
  s.dataset.folded = folded.size ? '1' : '';
  s.querySelectorAll('[data-anc]').forEach((g) => {
    const hide = folded.size && g.dataset.anc.split(' ').some((a) => folded.has(a));
    g.style.display = hide ? 'none' : '';
  });
  s.querySelectorAll('g.fold').forEach((f) => {
    const on = folded.has(f.dataset.fold);
    f.classList.toggle('folded', on);
    const t = f.querySelector('text'); if (t) t.textContent = on ? '+' : '−';
  });
  element.dataset.folded = String(folded.size);
};
// The best / worst leaves filter: their paths stay, the rest is dimmed.
const applyFilter = () => {
  const s = svg(); if (!s) return;
  const f = element.dataset.filter || 'all';
  element.querySelectorAll('button[data-filter]').forEach(
    (b) => b.classList.toggle('tg-on', b.dataset.filter === f));
  if (f === 'all' && !s.dataset.filtered) return;
  s.querySelectorAll('.tg-dim').forEach((g) => g.classList.remove('tg-dim'));
  s.dataset.filtered = f === 'all' ? '' : f;
  if (f === 'all') return;
  const keep = new Set();
  (s.dataset[f] || '').split(' ').filter(Boolean).forEach((id) => {
    keep.add(id);
    const g = s.querySelector(`g.tn[data-node-id="${id}"]`);
    (g ? g.dataset.anc : '').split(' ').filter(Boolean).forEach((a) => keep.add(a));
  });
  s.querySelectorAll('g.tn, g.edge').forEach((g) => {
    if (!keep.has(g.dataset.nodeId)) g.classList.add('tg-dim');
  });
};
const overlayBox = () => element.querySelector('input[data-overlay]');
const applyOverlay = () => {
  const b = overlayBox(); if (b) b.checked = !element.classList.contains('tg-no-overlay');
};
element.addEventListener('change', (e) => {
  if (e.target && e.target.matches('input[data-overlay]')) {
    element.classList.toggle('tg-no-overlay', !e.target.checked);
  }
});
const loaded = new Set(), failed = new Set();
// Counted once per frame, not once per image event (a big tree fires ~600 of them).
let counting = false;
const countSoon = () => {
  if (counting) return;
  counting = true;
  requestAnimationFrame(() => { counting = false; count(); });
};
const count = () => {
  const s = svg(); if (!s) return;
  const hrefs = [...s.querySelectorAll('image')].map((i) => i.getAttribute('href'));
  element.dataset.imagesTotal = String(hrefs.length);
  element.dataset.imagesLoaded = String(hrefs.filter((h) => loaded.has(h) || failed.has(h)).length);
  element.dataset.imagesFailed = String(hrefs.filter((h) => failed.has(h)).length);
};
const seen = (e) => {
  if (!e.target || e.target.tagName !== 'image') return;
  (e.type === 'error' ? failed : loaded).add(e.target.getAttribute('href'));
  countSoon();
};
// Move the selection ring at once (the panel follows from the server).
const mark = (id) => {
  const s = svg(); if (!s) return;
  s.querySelectorAll('g.tn.selected').forEach((g) => g.classList.remove('selected'));
  const ring = s.querySelector('rect.selection');
  const g = s.querySelector(`g.tn[data-node-id="${id}"]`);
  const box = g && g.querySelector('rect.box');
  if (!g || !box || !ring) { if (ring) ring.setAttribute('display', 'none'); return; }
  g.classList.add('selected');
  const b = box.getBBox(), pad = 5.5;
  ring.setAttribute('x', b.x - pad); ring.setAttribute('y', b.y - pad);
  ring.setAttribute('width', b.width + 2 * pad); ring.setAttribute('height', b.height + 2 * pad);
  ring.setAttribute('display', 'inline');
};
// Gradio drops a trigger while the previous 'select' is still pending: the panel (PANEL_JS)
// asks again for `window.tgWantedNode` when what it shows differs.
const pick = (id) => { mark(id); window.tgWantedNode = id; trigger('select', {node_id: id}); };
window.tgMarkTreeNode = mark;
element.addEventListener('load', seen, true);
element.addEventListener('error', seen, true);
element.addEventListener('click', (e) => {
  // Buttons only: the view itself carries data-zoom / data-filter (its current settings).
  const fb = e.target.closest('g[data-fold]');
  if (fb) {
    const id = fb.dataset.fold;
    if (folded.has(id)) folded.delete(id); else folded.add(id);
    applyFold(); return;
  }
  const fl = e.target.closest('button[data-filter]');
  if (fl) { element.dataset.filter = fl.dataset.filter; applyFilter(); return; }
  const zb = e.target.closest('button[data-zoom]');
  if (zb) {
    const cur = Number(element.dataset.zoomValue || 1);
    const how = zb.dataset.zoom;
    element.dataset.zoom = how === 'in' ? String(Math.min(4, cur * 1.25))
      : how === 'out' ? String(Math.max(0.2, cur / 1.25)) : how;
    apply(); return;
  }
  const n = e.target.closest('[data-node-id]');
  if (n) pick(Number(n.dataset.nodeId));
});
element.addEventListener('keydown', (e) => {
  if (e.key !== 'Enter' && e.key !== ' ') return;
  const n = e.target.closest('[data-node-id]');
  if (n) { e.preventDefault(); pick(Number(n.dataset.nodeId)); }
});
window.addEventListener('resize', () => { if (!element.dataset.zoom || element.dataset.zoom === 'fit') apply(); });
// Shown at last (its tab opened): fit and centre what was drawn while hidden.
new ResizeObserver(() => {
  if (element.dataset.pending) apply();
  if (element.dataset.centre) centreRoot();
}).observe(element);
// Where the reader had scrolled: a redraw of the same tree (a branch arriving) keeps it.
let scrolled = null;
element.addEventListener('scroll', (e) => {
  if (e.target.classList && e.target.classList.contains('tg-tree-scroll')) {
    scrolled = [e.target.scrollLeft, e.target.scrollTop];
  }
}, true);
const drawn = () => {
  const s = svg();
  const id = s ? s.dataset.treeId : '';
  const fresh = id !== element.dataset.shownTree;
  if (fresh) { folded = new Set(); element.dataset.filter = 'all'; scrolled = null; }
  apply(); count(); applyFold(); applyFilter(); applyOverlay();
  if (fresh && s) { element.dataset.shownTree = id; centreRoot(); }
  const box = element.querySelector('.tg-tree-scroll');
  if (!fresh && box && scrolled) { box.scrollLeft = scrolled[0]; box.scrollTop = scrolled[1]; }
};
watch('value', () => {
  drawn();
  // A newly drawn tree has no selection: forget the one wanted in the previous tree.
  if (!svg()?.querySelector('g.tn.selected')) window.tgWantedNode = null;
});
drawn();
"""

EMPTY_TREE = '<div class="tg-empty">Pick a job and one of its logged trees.</div>'

PANEL_JS = """
element.addEventListener('click', (e) => {
  const n = e.target.closest('li[data-node-id]');
  if (!n) return;
  const id = Number(n.dataset.nodeId);
  if (window.tgMarkTreeNode) window.tgMarkTreeNode(id);
  window.tgWantedNode = id;
  trigger('select', {node_id: id});
});
watch('value', () => {
  const panel = element.querySelector('.tg-panel[data-node-id]');
  if (!panel) return;
  const wanted = window.tgWantedNode;
  if (wanted && Number(panel.dataset.nodeId) !== wanted) {
    trigger('select', {node_id: wanted});  // a later click was dropped while this one ran
    return;
  }
  // A node was picked: bring its details into view (no jump when they are visible already).
  panel.scrollIntoView({block: 'nearest', behavior: 'smooth'});
});
"""


@dataclass
class Branching:
    """A branch job being waited for."""

    job_id: int
    tree_id: int
    node_id: int
    k: int
    done: bool = False


def tree_view_html(
    tree: Tree,
    *,
    selected: int | None = None,
    new_branch_job: int | None = None,
    asset_base: str = "",
    pixelated: bool = False,
    sources: Mapping[str, str] | None = None,
    layout: TreeLayout | None = None,
    fallback: bool = True,
) -> str:
    """Caption, legend, zoom toolbar and the scrollable SVG of one tree."""
    lay = layout or layout_tree(tree)
    svg = render_tree_svg(
        tree,
        selected=selected,
        new_branch_job=new_branch_job,
        asset_base=asset_base,
        pixelated=pixelated,
        layout=lay,
        sources=sources,
        fallback=fallback,
    )
    overlay = (
        f'<label class="tg-overlay-toggle"><input type="checkbox" data-overlay checked> '
        f"show branch results ({len(tree.branches)} states)</label>"
        if tree.branches
        else ""
    )
    # A tag name of its own for every render: Gradio's HTML update then swaps the tree in whole
    # instead of syncing its ~4,000 elements attribute by attribute (2 s for a k=4, d=4 tree).
    tag = f"tg-tree-{next(_RENDERS)}"
    return (
        f'<{tag} class="tg-tree-wrap">'
        + render.tree_caption(tree)
        + render_tree_legend(lay.scales)
        + '<div class="tg-tree-toolbar"><span class="tg-muted">zoom</span>'
        '<button type="button" data-zoom="out" aria-label="zoom out">−</button>'
        "<span data-zoom-label>100%</span>"
        '<button type="button" data-zoom="in" aria-label="zoom in">+</button>'
        '<button type="button" data-zoom="fit">fit</button>'
        '<button type="button" data-zoom="1">100%</button>'
        '<span class="tg-muted">leaves</span>'
        '<button type="button" data-filter="all">all</button>'
        f'<button type="button" data-filter="best">best {RANKED}</button>'
        f'<button type="button" data-filter="worst">worst {RANKED}</button>'
        f"{overlay}"
        f'<span class="tg-muted">{len(lay.visible)} nodes drawn of {len(tree.all_nodes)} states · '
        "click a node or an edge; ± folds a subtree</span></div>"
        + ranked_leaves_html(lay)
        + f'<div class="tg-tree-scroll">{svg}</div></{tag}>'
    )


_RENDERS = itertools.count()


RANKED = 5


def ranked_leaves_html(lay: TreeLayout) -> str:
    """The best and worst training leaves with their paths (shown by the leaves filter)."""
    best, worst = ranked_leaves(lay, RANKED)
    parts = []
    for kind, ids in (("best", best), ("worst", worst)):
        items = []
        for leaf_id in ids:
            vis = lay.visible[leaf_id]
            hops = [lay.visible[a].node for a in vis.ancestors] + [vis.node]
            path = " → ".join(f"step {n.step_index}" for n in hops)
            items.append(
                f'<li data-node-id="{leaf_id}">reward <b>{render.fmt(vis.node.reward)}</b> · '
                f"node {vis.node.node_index} · {render.esc(path)}</li>"
            )
        parts.append(
            f'<div class="tg-rank tg-rank-{kind}"><b>{kind.capitalize()} {len(ids)} leaves</b>'
            f"<ol>{''.join(items)}</ol></div>"
        )
    return f'<div class="tg-ranks">{"".join(parts)}</div>'


def tree_choice_label(summary: TreeSummary) -> str:
    prompt = summary.prompt if len(summary.prompt) <= 48 else summary.prompt[:47] + "…"
    best = "-" if summary.best_reward is None else f"{summary.best_reward:.3f}"
    return (
        f"epoch {summary.epoch} · tree {summary.index} · {summary.leaves} leaves · best {best} · "
        f"{prompt}"
    )


def _branch_status(
    tree: Tree, branching: Branching, status: str, waiting: str | None = None
) -> str:
    children = [n for n in tree.branches if n.branch_job_id == branching.job_id]
    leaves = [n for n in children if n.is_leaf and n.reward is not None]
    if children:
        rewards = ", ".join(f"{n.reward:.3f}" for n in leaves) or "not scored"
        grown = sum(1 for n in children if n.parent_id == branching.node_id)
        text = (
            f"Branch job #{branching.job_id} {render.status_phrase(status)}: {grown} new children of node "
            f"{branching.node_id} ({len(children)} new states); their leaves' rewards: {rewards}. "
            "They have a green dashed frame in the tree."
        )
        return render.notice(text, "ok")
    if status in ACTIVE_STATUSES:
        where = f" ({waiting})" if waiting and status == "queued" else ""
        return render.notice(
            f"Branch job #{branching.job_id} {render.status_phrase(status)}{where}: growing "
            f"{branching.k} children from node {branching.node_id}. They appear here when the "
            "job has scored them.",
            "info",
        )
    return render.notice(
        f"Branch job #{branching.job_id} ended {status} without new nodes; see its log in the "
        "Run tab.",
        "error" if status in ("failed", "lost") else "warn",
    )


@dataclass
class Loaded:
    """The tree on screen."""

    tree: Tree
    pixelated: bool
    complete: bool = True  # False: drawn before its thumbnails (they follow)


def _view(
    sh: Shared,
    client: ApiClient,
    loaded: Loaded,
    *,
    selected: int | None = None,
    new_branch_job: int | None = None,
    stream: bool = False,
) -> str:
    """The tree's HTML. With `stream`, a tree with more than STREAM_AFTER thumbnails not yet
    cached is drawn at once without them (clickable at once); `_view` without `stream` then
    draws it complete (Gradio's `.then`)."""
    lay = layout_tree(loaded.tree)
    urls = [vis.node.image_url for vis in lay.visible.values()]
    thumbs = sh.ctx.thumbs
    partial = False
    if stream:
        sources = thumbs.cached(client, urls, TREE_PX)
        partial = len({u for u in urls if u}) - len(sources) > STREAM_AFTER
        if not partial:
            sources = thumbs.many(client, urls, TREE_PX)
    else:
        sources = thumbs.many(client, urls, TREE_PX)
    loaded.complete = not partial
    return tree_view_html(
        loaded.tree,
        selected=selected,
        new_branch_job=new_branch_job,
        asset_base=sh.ctx.public_base,
        pixelated=loaded.pixelated,
        sources=sources,
        layout=lay,
        fallback=not partial,
    )


# A 27-leaf tree has ~68 thumbnails: fetched at once (~0.2 s cold). Beyond this many missing,
# the tree is drawn first and its thumbnails follow.
STREAM_AFTER = 80


def _panel(sh: Shared, client: ApiClient, loaded: Loaded, node_id: int | None) -> str:
    tree = loaded.tree
    node = tree.node(node_id) if node_id is not None else None
    if node is None:
        return render.node_panel(tree, None)
    path = tree.path_to(node.id)
    return render.node_panel(
        tree,
        node.id,
        asset_base=sh.ctx.public_base,
        pixelated=loaded.pixelated,
        image_src=sh.ctx.thumbs.fetch(client, node.image_url, PANEL_PX) if node.image_url else None,
        sources=sh.ctx.thumbs.many(client, [hop.image_url for hop in path], TREE_PX),
    )


PREFETCH_TREES = 3


def _warm(sh: Shared, client: ApiClient, tree_ids: list[int]) -> None:
    """Fetch the thumbnails of these trees into the cache, so that picking one of them later
    draws it at once (the tab warms the newest few of a job's trees when it lists them)."""
    for tree_id in tree_ids:
        try:
            tree = client.tree(tree_id)
        except ApiError:
            continue
        urls = [vis.node.image_url for vis in layout_tree(tree).visible.values()]
        sh.ctx.thumbs.many(client, urls, TREE_PX)


def warm_newest_trees(sh: Shared, client: ApiClient, job_id: int) -> None:
    """In the background: the thumbnails of a job's newest trees (the Run tab calls this when a
    job moves on, so the inspector opens on a warm cache)."""

    def work() -> None:
        try:
            trees = client.trees(job_id, limit=500).trees
        except ApiError:
            return
        newest = sorted(trees, key=lambda t: (-t.epoch, t.index))[:PREFETCH_TREES]
        _warm(sh, client, [t.id for t in newest])

    sh.ctx.in_background(work)


def build(sh: Shared, demo: gr.Blocks, tab: gr.Tab) -> None:
    tree_state = gr.State(None)  # Loaded | None
    node_state = gr.State(None)  # selected node id
    branch_state = gr.State(None)  # Branching | None
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
    tree_ids = gr.State([])  # the listed trees, newest first
    tree_msg = gr.HTML()
    tree_html = gr.HTML(
        EMPTY_TREE,
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
                "**Branch again** regrows children from the selected node with the job's "
                "current policy (a `sample` job)."
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
            branch_msg = gr.HTML(elem_id="tg-branch-msg")
    timer = gr.Timer(POLL_SECONDS, active=False)

    def refresh_lists(
        key: str | None, job: Any, loaded: Any, request: gr.Request
    ) -> tuple[Any, ...]:
        """Fresh job and tree choices; keeps the loaded tree when it is still listed, else
        picks the job's newest tree. The last value says what to load next: None for no
        change, "clear" to empty the view, or {"tree": id, "warm": [ids to prefetch after]}."""
        client = sh.ctx.client(request, key)
        job_id = as_int(job)
        try:
            jobs = client.list_jobs(limit=100).jobs
            trees = client.trees(job_id, limit=500).trees if job_id is not None else []
        except ApiError as exc:
            return gr.skip(), gr.skip(), render.notice(exc.message, "error"), None, gr.skip()
        job_update = gr.update(choices=job_choices(jobs), value=job_id)
        if job_id is None:
            return job_update, gr.update(choices=[], value=None), "", None, []
        if not trees:
            picked = next((j for j in jobs if j.id == job_id), None)
            flat = (
                picked is not None
                and picked.kind == "train"
                and picked.algorithm
                not in (
                    "",
                    "treegrpo",
                )
            )
            message = render.notice(
                f"Job #{job_id} is a {picked.algorithm} run: flat baselines sample "
                "independent images and grow no tree, so there is nothing to inspect or "
                "branch from here."
                if flat and picked is not None
                else f"Job #{job_id} has no logged tree yet (TreeGRPO runs log one every "
                "`log_tree_every` epochs and at the final epoch; sample jobs log theirs). This "
                "list refreshes when you come back to this tab or press Refresh.",
                "info",
            )
            return job_update, gr.update(choices=[], value=None), message, "clear", []
        trees = sorted(trees, key=lambda t: (-t.epoch, t.index))
        current = loaded.tree.id if isinstance(loaded, Loaded) else None
        keep = current if any(t.id == current for t in trees) else None
        chosen = keep if keep is not None else trees[0].id
        others = [t.id for t in trees[: PREFETCH_TREES + 1] if t.id != chosen][:PREFETCH_TREES]
        choices = [(tree_choice_label(t), t.id) for t in trees]
        load = None if keep else {"tree": chosen, "warm": others}
        ids = [t.id for t in trees]
        return job_update, gr.update(choices=choices, value=chosen), "", load, ids

    def load_tree(
        tree_id: Any, key: str | None, request: gr.Request, warm: Any = None
    ) -> tuple[Any, ...]:
        if tree_id is None:  # nothing to change
            return (gr.skip(),) * 5
        tid = as_int(tree_id)
        if tid is None:
            return None, None, EMPTY_TREE, render.node_panel(Tree.from_json({}), None), ""
        client = sh.ctx.client(request, key)
        try:
            tree = client.tree(tid)
            job = client.get_job(tree.summary.job_id)
        except ApiError as exc:
            return None, None, render.notice(exc.message, "error"), gr.skip(), ""
        loaded = Loaded(tree=tree, pixelated=small_images(job.config))
        view = _view(sh, client, loaded, stream=True)
        if warm:
            # Drawn: now warm the job's next newest trees while the user looks at this one.
            sh.ctx.in_background(_warm, sh, client, [int(t) for t in warm])
        return loaded, None, view, render.node_panel(tree, None), ""

    tree_outputs = [tree_state, node_state, tree_html, panel, branch_msg]

    # No tree (a flat baseline's run, or none logged yet): nothing to branch from. A viewer's
    # key may not branch at all (it would be a new job): the reason shows under the button.
    def branch_allowed(loaded: Any, me: dict[str, Any] | None) -> tuple[Any, Any]:
        refused = access.submit_refusal(me) if me else None
        ready = isinstance(loaded, Loaded) and refused is None
        return gr.Button(interactive=ready), access.refusal_html(refused) if refused else gr.skip()

    for trigger in (tree_state.change, sh.me.change):
        trigger(branch_allowed, [tree_state, sh.me], [branch, branch_msg], **QUIET)

    def complete(loaded: Any, node: Any, key: str | None, request: gr.Request) -> tuple[Any, Any]:
        """The thumbnails of a tree drawn without them (a big tree's second render)."""
        if not isinstance(loaded, Loaded) or loaded.complete:
            return gr.skip(), gr.skip()
        view = _view(sh, sh.ctx.client(request, key), loaded, selected=as_int(node))
        return loaded, view

    def then_complete(event: Any) -> None:
        event.then(complete, [tree_state, node_state, sh.key], [tree_state, tree_html], **QUIET)

    list_inputs = [sh.key, sh.job, tree_state]

    def refresh_and_load(
        key: str | None, job: Any, loaded: Any, request: gr.Request
    ) -> tuple[Any, ...]:
        """Lists and the tree they point at, in one round trip."""
        *lists, load, ids = refresh_lists(key, job, loaded, request)
        if isinstance(load, dict):
            shown = load_tree(load.get("tree"), key, request, warm=load.get("warm"))
        else:
            shown = load_tree(load, key, request)
        return (*lists, ids, *shown)

    for trigger in (demo.load, refresh.click, sh.job.change, tab.select):
        then_complete(
            trigger(
                refresh_and_load,
                list_inputs,
                [job_pick, tree_pick, tree_msg, tree_ids, *tree_outputs],
                show_progress="minimal",
            )
        )
    # `select` fires once per pick (a Dropdown fires `input` twice).
    job_pick.select(lambda value: as_int(value), job_pick, sh.job)
    then_complete(
        tree_pick.select(load_tree, [tree_pick, sh.key], tree_outputs, show_progress="minimal")
    )

    def step(direction: int) -> Any:
        """Show the next newer (-1) or older (+1) tree of the list."""

        def handler(ids: Any, loaded: Any, key: str | None, request: gr.Request) -> tuple[Any, ...]:
            listed = [int(i) for i in ids or []]
            if not listed:
                return (gr.skip(),) * 6
            current = loaded.tree.id if isinstance(loaded, Loaded) else None
            at = listed.index(current) if current in listed else -direction
            target = listed[max(0, min(len(listed) - 1, at + direction))]
            if target == current:
                return (gr.skip(),) * 6
            return (gr.update(value=target), *load_tree(target, key, request))

        return handler

    for button, direction in ((newer, -1), (older, 1)):
        then_complete(
            button.click(
                step(direction), [tree_ids, tree_state, sh.key], [tree_pick, *tree_outputs]
            )
        )

    def select_node(
        loaded: Any, key: str | None, request: gr.Request, evt: gr.EventData
    ) -> tuple[Any, ...]:
        # The page moves the selection ring itself; only the panel comes from here.
        node_id = as_int(event_data(evt).get("node_id"))
        if not isinstance(loaded, Loaded) or node_id is None:
            return gr.skip(), gr.skip()
        return node_id, _panel(sh, sh.ctx.client(request, key), loaded, node_id)

    # No overlay on the panel: clicks on its path entries must reach them.
    for source in (tree_html, panel):
        source.select(
            select_node, [tree_state, sh.key], [node_state, panel], show_progress="hidden"
        )

    def start_branch(
        state: Any, node: Any, k_value: Any, key: str | None, request: gr.Request
    ) -> tuple[Any, ...]:
        keep = gr.skip()
        if not state:
            return keep, render.notice("Load a tree first.", "warn"), gr.Timer(active=False)
        node_id = as_int(node)
        if node_id is None:
            return (
                keep,
                render.notice("Click the node to branch from first.", "warn"),
                gr.Timer(active=False),
            )
        if not (key or "").strip():
            return keep, render.notice(KEY_REQUIRED_MESSAGE, "warn"), gr.Timer(active=False)
        kk = as_int(k_value)
        if kk is None or not 1 <= kk <= 16:
            return (
                keep,
                render.notice("k must be a whole number from 1 to 16.", "error"),
                gr.Timer(active=False),
            )
        tree = state.tree
        picked = tree.node(node_id)
        if picked is not None and (picked.is_leaf or picked.sigma == 0):
            return (
                keep,
                render.notice(
                    "A leaf is a finished image: it has no denoising step left to branch from. "
                    "Pick a node above it (the path under the image lists them).",
                    "warn",
                ),
                gr.Timer(active=False),
            )
        try:
            job = sh.ctx.client(request, key).branch(tree.id, node_id, k=kk)
        except ApiError as exc:
            return (
                keep,
                render.notice(exc.message, "warn" if exc.status == 401 else "error"),
                gr.Timer(active=False),
            )
        branching = Branching(job_id=job.id, tree_id=tree.id, node_id=node_id, k=kk)
        waiting = render.queue_text(job) if job.queue_position else None
        return (
            branching,
            _branch_status(tree, branching, job.status, waiting),
            gr.Timer(active=True),
        )

    branch.click(
        start_branch,
        [tree_state, node_state, k, sh.key],
        [branch_state, branch_msg, timer],
        concurrency_limit=1,
    )

    def poll(
        branching: Any, state: Any, node: Any, key: str | None, request: gr.Request
    ) -> tuple[Any, ...]:
        skip = gr.skip()
        if not isinstance(branching, Branching) or branching.done:
            return skip, skip, skip, skip, skip, gr.Timer(active=False)
        client = sh.ctx.client(request, key)
        try:
            job = client.get_job(branching.job_id)
            tree = client.tree(branching.tree_id)
        except ApiError as exc:
            return skip, skip, skip, skip, render.notice(exc.message, "error"), skip
        arrived = any(n.branch_job_id == branching.job_id for n in tree.branches)
        final = job.status not in ACTIVE_STATUSES
        waiting = render.queue_text(job) if job.queue_position else None
        message = _branch_status(tree, branching, job.status, waiting)
        if not arrived and not final:
            return skip, skip, skip, skip, message, skip
        branching.done = final
        if not isinstance(state, Loaded) or state.tree.id != tree.id:
            return branching, skip, skip, skip, message, gr.Timer(active=not final)
        loaded = Loaded(tree=tree, pixelated=state.pixelated)
        node_id = as_int(node)
        return (
            branching,
            loaded,
            _view(sh, client, loaded, selected=node_id, new_branch_job=branching.job_id),
            _panel(sh, client, loaded, node_id),
            message,
            gr.Timer(active=not final),
        )

    timer.tick(
        poll,
        [branch_state, tree_state, node_state, sh.key],
        [branch_state, tree_state, tree_html, panel, branch_msg, timer],
        **QUIET,
    )
