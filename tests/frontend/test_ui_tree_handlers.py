"""The Tree inspector's handlers (frontend/tree_handlers.py) against a fake API
(httpx.MockTransport): the compact view and its atlas, the caches (If-None-Match, one atlas
download), the panel's one image, branch polling, the pickers and the refusals."""

from __future__ import annotations

import copy
import html
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from ui_factories import job_json, tree_json

from frontend import render
from frontend import tree_handlers as h
from frontend.client import ApiClient, Tree
from frontend.thumbs import ThumbnailCache
from frontend.tree_client import TreeCache, fetch_tree
from frontend.tree_svg import layout_tree
from frontend.tree_view import BRANCH_FLAG, FOLD_FLAG, LEAF_FLAG, NEW_FLAG, SDE_FLAG


def _png(size: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


class FakeApi:
    """The routes the inspector calls, with ETags, and every request kept."""

    def __init__(self, tree: dict[str, Any], job: dict[str, Any] | None = None) -> None:
        self.tree = tree
        self.job = job or job_json()
        self.branch_job = job_json(id=9, kind="sample", status="running")
        self.seen: list[httpx.Request] = []

    def etag(self) -> str:
        return '"t' + str(abs(hash(json.dumps(self.tree, sort_keys=True)))) + '"'

    def atlas_index(self, branch: str | None) -> dict[str, Any]:
        if branch is None:
            ids = [n["id"] for n in self.tree["nodes"]]
        else:
            group = next(g for g in self.tree["branches"] if str(g["id"]) == branch)
            ids = [n["id"] for n in group["nodes"]]
        return {
            "version": 1,
            "format": "jpeg",
            "tile": 48,
            "columns": 8,
            "width": 384,
            "height": 48,
            "slots": {str(i): s for s, i in enumerate(ids)},
            "etag": f"atlas-{branch or 'tree'}",
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        path = request.url.path.removeprefix("/api/v1")
        branch = request.url.params.get("branch")
        if path == f"/trees/{self.tree['id']}":
            etag = self.etag()
            if request.headers.get("if-none-match") == etag:
                return httpx.Response(304, headers={"ETag": etag})
            return httpx.Response(200, json=self.tree, headers={"ETag": etag})
        if path.endswith("/atlas/index"):
            return httpx.Response(200, json=self.atlas_index(branch))
        if path.endswith("/atlas"):
            return httpx.Response(200, content=b"\xff\xd8fake-jpeg", headers={"ETag": '"a"'})
        if path == f"/jobs/{self.job['id']}":
            return httpx.Response(200, json=self.job)
        if path == "/jobs/9":
            return httpx.Response(200, json=self.branch_job)
        if path == "/jobs":
            return httpx.Response(200, json={"data": [self.job], "count": 1})
        if path.endswith("/trees") and path.startswith("/jobs/"):
            return httpx.Response(200, json={"data": [self.tree], "count": 1})
        if path.startswith("/artifacts/"):
            return httpx.Response(200, content=_png(), headers={"content-type": "image/png"})
        if path.endswith("/branch") and request.method == "POST":
            return httpx.Response(201, json=self.branch_job)
        return httpx.Response(404, json={"title": "not found", "status": 404})

    def paths(self) -> list[str]:
        return [r.url.path.removeprefix("/api/v1") for r in self.seen]


def _view(value: dict[str, Any]) -> dict[str, Any]:
    """The view the page parses from the value's JSON text, its atlases' files put back."""
    view = json.loads(value["view"])
    for atlas, file in zip(view["atlases"], value["files"], strict=True):
        atlas["file"] = file
    return {**view, "selected": value.get("selected")}


def _setup(tree: dict[str, Any], key: str | None = "k" * 20) -> tuple[ApiClient, FakeApi]:
    api = FakeApi(tree)
    return ApiClient("http://api.test", api_key=key, transport=httpx.MockTransport(api)), api


@pytest.fixture
def cache(tmp_path: Path) -> TreeCache:
    return TreeCache(folder=tmp_path / "atlases")


def test_a_tree_loads_as_compact_columns_with_its_atlas_as_a_gradio_file(
    cache: TreeCache,
) -> None:
    client, _ = _setup(tree_json(k=4, depth=4))
    loaded, value = h.load_tree(client, 1, cache=cache)
    view = _view(value)
    cols = view["nodes"]
    drawn = len(layout_tree(loaded.tree).visible)
    assert drawn == 598 and all(len(column) == drawn for column in cols.values())
    # About 50 bytes a node: ~30 KB for 256 leaves (the SVG was 254 KB without images).
    assert len(json.dumps(cols, separators=(",", ":"))) < 60 * drawn
    assert len(value["view"]) < 40_000 and isinstance(value["files"], list)
    assert loaded.pixelated  # the digits model's small images
    root = cols["p"].index(-1)
    assert view["roots"] == [root]
    folds = [i for i, f in enumerate(cols["f"]) if f & FOLD_FLAG]
    assert len(folds) == 1 + 4 + 16 + 64  # every node with several children
    leaves = [i for i, f in enumerate(cols["f"]) if f & LEAF_FLAG]
    assert len(leaves) == view["leaves"] == 256
    assert all(cols["f"][i] & SDE_FLAG for i in range(drawn) if cols["lp"][i] is not None)
    (atlas,) = view["atlases"]
    assert atlas["file"]["meta"] == {"_type": "gradio.FileData"}
    assert Path(atlas["file"]["path"]).read_bytes() == b"\xff\xd8fake-jpeg"
    assert all(t >= 0 for t in cols["t"]) and set(cols["a"]) == {0}
    assert view["best"] and cols["rw"][view["best"][0]] == 1.0
    assert "<b>Tree 1</b>" in view["caption"] and "treegrpo-legend" in view["legend"]


def test_opening_again_costs_a_304_and_no_atlas_download(cache: TreeCache) -> None:
    client, api = _setup(tree_json())
    h.load_tree(client, 1, cache=cache)
    first = api.paths()
    assert first.count("/trees/1/atlas") == 1 and first.count("/trees/1/atlas/index") == 1
    api.seen.clear()
    _, value = h.load_tree(client, 1, cache=cache)
    view = _view(value)
    assert api.seen[0].headers["if-none-match"] == api.etag()
    assert api.seen[0].url.params["drawn"] == "true"  # only the nodes the page draws
    assert "/jobs/1" not in api.paths()  # the job's model is asked once
    assert "/trees/1/atlas" not in api.paths() and "/trees/1/atlas/index" not in api.paths()
    assert view["nodes"]["id"]  # the cached view
    # Another key (or none) never reads what this key fetched.
    other = ApiClient("http://api.test", transport=httpx.MockTransport(api))
    api.seen.clear()
    fetch_tree(other, 1, cache)
    assert "if-none-match" not in api.seen[0].headers


def test_a_tree_without_atlas_is_drawn_without_tiles(cache: TreeCache) -> None:
    client, api = _setup(tree_json())
    real = api.__call__

    def no_atlas(request: httpx.Request) -> httpx.Response:
        if "/atlas" in request.url.path:
            return httpx.Response(404, json={"title": "no images", "status": 404})
        return real(request)

    client = ApiClient("http://api.test", transport=httpx.MockTransport(no_atlas))
    _, value = h.load_tree(client, 1, cache=cache)
    view = _view(value)
    assert view["atlases"] == [] and set(view["nodes"]["t"]) == {-1}


def test_the_panel_fetches_only_the_big_image(cache: TreeCache) -> None:
    client, api = _setup(tree_json())
    loaded, _ = h.load_tree(client, 1, cache=cache)
    leaf = next(n for n in loaded.tree.nodes if n.is_leaf)
    api.seen.clear()
    panel = h.node_panel(client, loaded, leaf.id, ThumbnailCache())
    assert [p for p in api.paths() if p.startswith("/artifacts/")] == [
        leaf.image_url.removeprefix("/api/v1") if leaf.image_url else ""
    ]
    assert f'data-node-id="{leaf.id}"' in panel and "data:image/png;base64," in panel
    # The full-size file opens through the UI's origin (reads may be closed): frontend/links.py.
    assert 'href="files/' in panel and "k" * 20 not in panel
    # The path's small images are left out (not linked: with reads closed they would 401).
    assert panel.count("<img") == 1


def _branched(data: dict[str, Any], origin: int, job: int = 9) -> dict[str, Any]:
    out = copy.deepcopy(data)
    step = next(n for n in data["nodes"] if n["id"] == origin)["step_index"]
    out["branches"] = [
        {
            "id": 4,
            "job_id": job,
            "job_status": "succeeded",
            "node_id": origin,
            "k": 2,
            "nodes": [
                {
                    "id": 70 + i,
                    "node_index": i,
                    "parent_id": None,
                    "step_index": step + 1,
                    "t": 0.1,
                    "sigma": 0.1,
                    "is_leaf": True,
                    "log_prob": -1.0,
                    "reward": 0.9,
                    "advantage": 0.1,
                    "image_url": None,
                }
                for i in range(2)
            ],
        }
    ]
    return out


def test_a_branch_poll_waits_then_redraws_with_the_branch_atlas(cache: TreeCache) -> None:
    data = tree_json()
    client, api = _setup(data)
    loaded, _ = h.load_tree(client, 1, cache=cache)
    origin = next(n for n in loaded.tree.nodes if n.step_index == 4)
    branching, message = h.start_branch(client, loaded, origin.id, 2)
    assert branching is not None and "Branch job #9" in message
    waiting = h.poll_branch(client, branching, loaded, origin.id, cache)
    assert waiting.view is None and not waiting.done
    api.tree = _branched(data, origin.id)
    api.branch_job = job_json(id=9, kind="sample", status="succeeded")
    arrived = h.poll_branch(client, branching, loaded, origin.id, cache)
    assert arrived.done and arrived.loaded is not None and arrived.view is not None
    assert arrived.loaded.branch_ids == (4,)
    assert "/trees/1/atlas/index" in api.paths()
    assert any(r.url.params.get("branch") == "4" for r in api.seen)
    view = _view(arrived.view)
    cols = view["nodes"]
    new = [i for i, f in enumerate(cols["f"]) if f & NEW_FLAG]
    assert len(new) == 2 and all(cols["f"][i] & BRANCH_FLAG for i in new)
    assert {cols["id"][i] for i in new} == {-70, -71}  # branch node ids negated (client.Tree)
    assert {cols["a"][i] for i in new} == {1}  # tiles from the branch's own atlas
    assert view["selected"] == origin.id and view["branches"] == 2


def test_pickers_keep_the_loaded_tree_and_say_why_a_job_has_none(cache: TreeCache) -> None:
    client, api = _setup(tree_json())
    lists = h.list_trees(client, 1, None)
    assert lists.load == 1 and lists.tree_id == 1 and lists.ids == [1]
    loaded, _ = h.load_tree(client, 1, cache=cache)
    assert h.list_trees(client, 1, loaded).load is None  # already on screen
    api.tree = {**api.tree, "id": 2}
    api.job = job_json(algorithm="flow_grpo")

    def empty(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/trees"):
            return httpx.Response(200, json={"data": [], "count": 0})
        return api(request)

    flat = h.list_trees(ApiClient("http://api.test", transport=httpx.MockTransport(empty)), 1, None)
    assert flat.load == "clear" and "flat baselines" in flat.message
    assert h.list_trees(client, None, None).load is None


def test_newer_older_and_branch_refusals() -> None:
    tree = Tree.from_json(tree_json())
    loaded = h.Loaded(tree, False)
    assert h.step_target([3, 1, 2], loaded, +1) == 2
    assert h.step_target([3, 1, 2], loaded, -1) == 3
    assert h.step_target([1], loaded, -1) is None
    assert h.step_target([], loaded, 1) is None
    assert h.step_target([5, 6], None, 1) == 5
    leaf = next(n for n in tree.nodes if n.is_leaf)
    inner = next(n for n in tree.nodes if not n.is_leaf)
    key = "k" * 20
    assert "Load a tree first" in str(h.branch_refusal(None, inner.id, key, 3))
    assert "Click the node" in str(h.branch_refusal(loaded, None, key, 3))
    assert "key" in str(h.branch_refusal(loaded, inner.id, "", 3)).lower()
    assert "1 to 16" in str(h.branch_refusal(loaded, inner.id, key, 17))
    assert "finished image" in str(h.branch_refusal(loaded, leaf.id, key, 3))
    assert h.branch_refusal(loaded, inner.id, key, 3) is None


def test_branch_again_is_disabled_where_the_api_would_refuse_the_branch(
    cache: TreeCache, tmp_path: Path
) -> None:
    data = tree_json()
    inner = [n for n in data["nodes"] if not n["is_leaf"]]
    hidden, point = inner[1], inner[-1]  # an ODE-chain state, the last branch point
    for node in data["nodes"]:
        node["branchable"] = not node["is_leaf"] and node is not hidden
        node["branch_refusal"] = None if node["branchable"] else "is a leaf: no steps left"
    hidden["branch_refusal"] = "has no stored latent: only branch points keep a latent"
    client, api = _setup(data)
    loaded, _ = h.load_tree(client, 1, cache=cache)
    key = "k" * 20
    assert h.branch_gate(loaded, point["id"]) is None and h.branch_gate(loaded, None) is None
    why = html.unescape(str(h.branch_gate(loaded, hidden["id"])))
    assert f"Node {hidden['id']} has no stored latent: only branch points keep a latent" in why
    # A click that beats the button's update is refused the same way, without a POST.
    assert h.branch_refusal(loaded, hidden["id"], key, 3) == h.branch_gate(loaded, hidden["id"])
    assert h.branch_refusal(loaded, point["id"], key, 3) is None
    assert not [r for r in api.seen if r.method == "POST"]

    # Retention dropped the tree's latents: none of its nodes is offered, and the page says
    # why; a node an earlier branch grew keeps its own latent and still can be.
    data = _branched(data, point["id"])
    data["latents_dropped_at"] = "2026-12-06T14:00:00Z"
    for node in data["nodes"]:
        node["branchable"] = False
        if not node["is_leaf"]:
            node["branch_refusal"] = (
                "has no stored latent: this tree's latents were dropped by retention (the "
                "operator keeps them for each job's newest trees only), so it can no longer be "
                "branched"
            )
    grown = data["branches"][0]["nodes"][0]
    grown.update(is_leaf=False, branchable=True, branch_refusal=None)
    client, _ = _setup(data)
    dropped, _ = h.load_tree(client, 1, cache=TreeCache(folder=tmp_path / "again"))
    assert dropped.tree.summary.latents_dropped_at is not None
    for node_id in (None, point["id"]):
        notice = html.unescape(str(h.branch_gate(dropped, node_id)))
        assert "latents were dropped by retention" in notice
        assert "can no longer be branched" in notice
    assert "dropped by retention" in str(h.branch_refusal(dropped, point["id"], key, 3))
    assert h.branch_gate(dropped, -grown["id"]) is None  # client.Tree negates branch node ids
    assert h.branch_gate(None, point["id"]) is None  # nothing loaded: nothing to explain


def test_a_branch_says_which_policy_grew_it(cache: TreeCache) -> None:
    """Issue 28 defect 5: the branch's result and its nodes' panel name the checkpoint (the
    branch job records it in BranchPublic.policy), not only the job log."""
    data = tree_json()
    client, api = _setup(data)
    loaded, _ = h.load_tree(client, 1, cache=cache)
    origin = next(n for n in loaded.tree.nodes if n.step_index == 4)
    branching, _ = h.start_branch(client, loaded, origin.id, 2)
    assert branching is not None
    branched = _branched(data, origin.id)
    text = "job 1's checkpoint of epoch 2 (the tree's epoch 3 was not kept)"
    branched["branches"][0]["policy"] = {"job_id": 1, "epoch": 2, "tree_epoch": 3, "text": text}
    api.tree = branched
    api.branch_job = job_json(id=9, kind="sample", status="succeeded")
    arrived = h.poll_branch(client, branching, loaded, origin.id, cache)
    assert arrived.loaded is not None
    assert f"grown with {text}" in html.unescape(arrived.message)
    child = next(n for n in arrived.loaded.tree.branches if n.id == -70)
    assert child.grown_with == text
    panel = render.node_panel(arrived.loaded.tree, child.id)
    assert f"branch job #9 with {text}" in html.unescape(panel)
    # A branch record without the field (an older API) still reads, naming only the job.
    del branched["branches"][0]["policy"]
    older = Tree.from_json(branched)
    assert "branch job #9<" in render.node_panel(older, -70)
