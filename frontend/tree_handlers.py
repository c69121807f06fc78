"""The Tree inspector's handlers: plain functions of an API client and the tab's state, so a
unit test calls them with a mock transport (frontend/tree.py only lays out and wires them).

What the page gets for a tree is a dict (frontend/tree_view.py): the drawn nodes' columns and
one atlas per tree and per branch as Gradio file references, drawn on a canvas by
frontend/static/tree.js. A click fills the panel's numbers in the page at once; `node_panel`
then brings the one big image.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from frontend import render
from frontend.client import ACTIVE_STATUSES, KEY_REQUIRED_MESSAGE, ApiClient, ApiError, Tree
from frontend.links import link_for
from frontend.shared import job_choices, small_images
from frontend.thumbs import PANEL_PX, TREE_PX, ThumbnailCache
from frontend.tree_client import CACHE, TreeCache, fetch_atlas, fetch_tree
from frontend.tree_svg import layout_tree
from frontend.tree_view import AtlasRef, tree_view_json

EMPTY_TREE = "Pick a job and one of its logged trees."
PREFETCH_TREES = 3


@dataclass
class Branching:
    """A branch job being waited for."""

    job_id: int
    tree_id: int
    node_id: int
    k: int
    done: bool = False


@dataclass
class Loaded:
    """The tree on screen: `etag` of its API answer, `branch_ids` its branch records with
    nodes (each has an atlas)."""

    tree: Tree
    pixelated: bool
    etag: str = ""
    branch_ids: tuple[int, ...] = field(default_factory=tuple)


def tree_choice_label(summary: Any) -> str:
    prompt = summary.prompt if len(summary.prompt) <= 48 else summary.prompt[:47] + "…"
    best = "-" if summary.best_reward is None else f"{summary.best_reward:.3f}"
    return (
        f"epoch {summary.epoch} · tree {summary.index} · {summary.leaves} leaves · best {best} · "
        f"{prompt}"
    )


def view_of(
    client: ApiClient,
    loaded: Loaded,
    *,
    new_branch_job: int | None = None,
    selected: int | None = None,
    cache: TreeCache = CACHE,
) -> dict[str, Any]:
    """The page's value for a loaded tree: laid out once per (tree ETag, atlases), then
    served from the cache (parse + layout of a 256-leaf tree is ~25 ms, of a 4,096-leaf one
    ~350 ms)."""
    tree = loaded.tree
    files = [fetch_atlas(client, tree.id, None, cache, tree_etag=loaded.etag)]
    files += [
        fetch_atlas(client, tree.id, b, cache, tree_etag=loaded.etag) for b in loaded.branch_ids
    ]
    key = (
        client.base_url,
        tree.id,
        loaded.etag,
        new_branch_job,
        loaded.pixelated,
        tuple(f.etag if f else "" for f in files),
    )

    def make() -> dict[str, Any]:
        refs = []
        # A branch's slots are keyed by branch node ids; the view negates them (client.Tree).
        for which, found in enumerate(files):
            if found is None:
                continue
            sign = 1 if which == 0 else -1
            refs.append(
                AtlasRef(
                    file=found.file_data(),
                    tile=int(found.index.get("tile", 48)),
                    columns=int(found.index.get("columns", 1)),
                    slots={sign * int(k): int(v) for k, v in dict(found.index["slots"]).items()},
                )
            )
        view = tree_view_json(
            tree,
            layout_tree(tree),
            atlases=refs,
            new_branch_job=new_branch_job,
            pixelated=loaded.pixelated,
        )
        return page_value(view)

    value = cache.view(key, make)
    return {**value, "selected": selected}


def page_value(view: dict[str, Any]) -> dict[str, Any]:
    """What the gr.HTML gets: the view as JSON text (the page parses it into plain arrays: a
    value Gradio's front end keeps as a reactive proxy costs a trap per read, ~100,000 reads
    for a 4,096-leaf tree's draw) and the atlases' files beside it (Gradio moves each into its
    cache and gives it a same-origin URL)."""
    files = [atlas.pop("file") for atlas in view["atlases"]]
    return {"view": json.dumps(view, separators=(",", ":")), "files": files}


def load_tree(
    client: ApiClient, tree_id: int, *, pixelated: bool | None = None, cache: TreeCache = CACHE
) -> tuple[Loaded, dict[str, Any]]:
    """A tree and its view (ApiError when the API cannot give it). `pixelated` None: asked of
    the job that logged it (its model's images are small)."""
    fetched = fetch_tree(client, tree_id, cache)
    job_id = fetched.tree.summary.job_id
    if pixelated is None:
        pixelated = cache.pixelated.get((client.base_url, job_id))
    if pixelated is None:  # a job's model never changes: asked once
        pixelated = small_images(client.get_job(job_id).config)
        cache.pixelated[(client.base_url, job_id)] = pixelated
    loaded = Loaded(fetched.tree, pixelated, fetched.etag, fetched.branch_ids)
    return loaded, view_of(client, loaded, cache=cache)


def node_panel(
    client: ApiClient,
    loaded: Loaded,
    node_id: int | None,
    thumbs: ThumbnailCache,
    public_base: str = "",
) -> str:
    """The side panel of a node: its big image (the one image this fetches), numbers and path;
    the path's small images only when already cached (never a link the browser cannot open
    with reads closed)."""
    tree = loaded.tree
    node = tree.node(node_id) if node_id is not None else None
    if node is None:
        return render.node_panel(tree, None)
    urls = [hop.image_url for hop in tree.path_to(node.id) if hop.image_url]
    cached = thumbs.cached(client, urls, TREE_PX)
    return render.node_panel(
        tree,
        node.id,
        asset_base=public_base,
        pixelated=loaded.pixelated,
        image_src=thumbs.fetch(client, node.image_url, PANEL_PX) if node.image_url else None,
        sources={url: cached.get(url, "") for url in urls},
        full_href=link_for(client, node.image_url, public_base),
    )


def step_target(ids: Sequence[Any], loaded: Any, direction: int) -> int | None:
    """The next newer (-1) or older (+1) tree of the listed ids, None at either end."""
    listed = [int(i) for i in ids or []]
    if not listed:
        return None
    current = loaded.tree.id if isinstance(loaded, Loaded) else None
    at = listed.index(current) if current in listed else -direction
    target = listed[max(0, min(len(listed) - 1, at + direction))]
    return None if target == current else target


def branch_status(tree: Tree, branching: Branching, status: str, waiting: str | None = None) -> str:
    children = [n for n in tree.branches if n.branch_job_id == branching.job_id]
    leaves = [n for n in children if n.is_leaf and n.reward is not None]
    if children:
        rewards = ", ".join(f"{n.reward:.3f}" for n in leaves) or "not scored"
        grown = sum(1 for n in children if n.parent_id == branching.node_id)
        policy = children[0].grown_with
        text = (
            f"Branch job #{branching.job_id} {render.status_phrase(status)}: {grown} new children "
            f"of node {branching.node_id} ({len(children)} new states)"
            + (f", grown with {policy}" if policy else "")
            + f"; their leaves' rewards: {rewards}. They have a green dashed frame in the tree."
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


def branch_refusal(loaded: Any, node_id: int | None, key: str | None, k: int | None) -> str | None:
    """Why "branch again" cannot start, as a notice; None when it can."""
    if not isinstance(loaded, Loaded):
        return render.notice("Load a tree first.", "warn")
    if node_id is None:
        return render.notice("Click the node to branch from first.", "warn")
    if not (key or "").strip():
        return render.notice(KEY_REQUIRED_MESSAGE, "warn")
    if k is None or not 1 <= k <= 16:
        return render.notice("k must be a whole number from 1 to 16.", "error")
    picked = loaded.tree.node(node_id)
    if picked is not None and (picked.is_leaf or picked.sigma == 0):
        return render.notice(
            "A leaf is a finished image: it has no denoising step left to branch from. "
            "Pick a node above it (the path under the image lists them).",
            "warn",
        )
    return branch_gate(loaded, node_id)  # the API would refuse it: never submit a failing job


RETENTION_NOTICE = (
    "This tree's latents were dropped by retention (the operator keeps them for each job's "
    "newest trees only): it can no longer be branched. Its images and numbers stay."
)


def branch_gate(loaded: Any, node_id: int | None) -> str | None:
    """Why "Branch again" is disabled for this tree and selected node, as a notice shown beside
    it; None when it is offered. The API's own answer decides (TreeNodePublic.branch_refusal,
    the rule a branch submission applies), so the page never offers a job that would fail."""
    if not isinstance(loaded, Loaded):
        return None
    node = loaded.tree.node(node_id) if node_id is not None else None
    if node is not None and node.branch_refusal is not None:
        name = f"Node {node.id}" if node.id >= 0 else f"Branch node {-node.id}"  # client.Tree
        return render.notice(f"{name} {node.branch_refusal}.", "info")
    if node is not None and node.branch_job_id is not None:
        return None  # a branch's latents are its own job's: retention never drops them
    if loaded.tree.summary.latents_dropped_at is not None:
        return render.notice(RETENTION_NOTICE, "info")
    return None


def start_branch(
    client: ApiClient, loaded: Loaded, node_id: int, k: int
) -> tuple[Branching | None, str]:
    """POST the branch; the Branching to wait for and the notice to show."""
    try:
        job = client.branch(loaded.tree.id, node_id, k=k)
    except ApiError as exc:
        return None, render.notice(exc.message, "warn" if exc.status == 401 else "error")
    branching = Branching(job_id=job.id, tree_id=loaded.tree.id, node_id=node_id, k=k)
    waiting = render.queue_text(job) if job.queue_position else None
    return branching, branch_status(loaded.tree, branching, job.status, waiting)


@dataclass(frozen=True)
class Polled:
    """What a branch poll changes: `loaded` and `view` only when new nodes arrived."""

    message: str
    done: bool
    loaded: Loaded | None = None
    view: dict[str, Any] | None = None


def poll_branch(
    client: ApiClient,
    branching: Branching,
    state: Any,
    node_id: int | None,
    cache: TreeCache = CACHE,
) -> Polled:
    """The branch job's status; the tree again (a 304 while nothing changed) and its view
    when the branch's nodes arrived."""
    job = client.get_job(branching.job_id)
    fetched = fetch_tree(client, branching.tree_id, cache)
    arrived = any(n.branch_job_id == branching.job_id for n in fetched.tree.branches)
    final = job.status not in ACTIVE_STATUSES
    waiting = render.queue_text(job) if job.queue_position else None
    message = branch_status(fetched.tree, branching, job.status, waiting)
    if not arrived and not final:
        return Polled(message, False)
    if not isinstance(state, Loaded) or state.tree.id != fetched.tree.id:
        return Polled(message, final)
    loaded = Loaded(fetched.tree, state.pixelated, fetched.etag, fetched.branch_ids)
    view = view_of(client, loaded, new_branch_job=branching.job_id, selected=node_id, cache=cache)
    return Polled(message, final, loaded, view)


@dataclass(frozen=True)
class Lists:
    """The job and tree pickers' choices and what to load next: `load` None for no change,
    "clear" to empty the view, else a tree id (with `warm`: ids to prefetch after)."""

    jobs: list[tuple[str, int]]
    job_id: int | None
    trees: list[tuple[str, int]]
    tree_id: int | None
    message: str
    load: int | str | None
    warm: list[int]
    ids: list[int]


def list_trees(client: ApiClient, job_id: int | None, loaded: Any) -> Lists:
    """Fresh job and tree choices; keeps the loaded tree when it is still listed, else picks
    the job's newest tree (ApiError when the API cannot answer)."""
    jobs = client.list_jobs(limit=100).jobs
    trees = client.trees(job_id, limit=500).trees if job_id is not None else []
    choices = job_choices(jobs)
    if job_id is None:
        return Lists(choices, None, [], None, "", None, [], [])
    if not trees:
        picked = next((j for j in jobs if j.id == job_id), None)
        flat = (
            picked is not None
            and picked.kind == "train"
            and picked.algorithm not in ("", "treegrpo")
        )
        message = render.notice(
            f"Job #{job_id} is a {picked.algorithm} run: flat baselines sample independent "
            "images and grow no tree, so there is nothing to inspect or branch from here."
            if flat and picked is not None
            else f"Job #{job_id} has no logged tree yet (TreeGRPO runs log one every "
            "`log_tree_every` epochs and at the final epoch; sample jobs log theirs). This "
            "list refreshes when you come back to this tab or press Refresh.",
            "info",
        )
        return Lists(choices, job_id, [], None, message, "clear", [], [])
    trees = sorted(trees, key=lambda t: (-t.epoch, t.index))
    current = loaded.tree.id if isinstance(loaded, Loaded) else None
    keep = current if any(t.id == current for t in trees) else None
    chosen = keep if keep is not None else trees[0].id
    others = [t.id for t in trees[: PREFETCH_TREES + 1] if t.id != chosen][:PREFETCH_TREES]
    return Lists(
        jobs=choices,
        job_id=job_id,
        trees=[(tree_choice_label(t), t.id) for t in trees],
        tree_id=chosen,
        message="",
        load=None if keep else chosen,
        warm=[] if keep else others,
        ids=[t.id for t in trees],
    )


def newest_tree_ids(client: ApiClient, job_id: int, count: int = PREFETCH_TREES) -> list[int]:
    trees = client.trees(job_id, limit=500).trees
    return [t.id for t in sorted(trees, key=lambda t: (-t.epoch, t.index))[:count]]


def warm(client: ApiClient, tree_ids: Sequence[int], cache: TreeCache = CACHE) -> None:
    """Fetch, lay out and get the atlases of these trees into the cache, so picking one later
    draws it at once (run in the background)."""
    for tree_id in tree_ids:
        try:
            load_tree(client, int(tree_id), cache=cache)
        except ApiError:
            continue
