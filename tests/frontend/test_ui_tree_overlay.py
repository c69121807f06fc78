"""Branch results beside the training tree (issue 18): the training layout never moves, the
caption counts training leaves only, the overlay is its own group; big trees carry what the
page needs to fold subtrees, filter the best and worst leaves and centre the root."""

from __future__ import annotations

import copy
import time
import xml.etree.ElementTree as ET
from typing import Any

from ui_factories import tree_json

from frontend import render
from frontend.client import Tree
from frontend.tree_svg import (
    branch_outline,
    layout_tree,
    ranked_leaves,
    render_tree_legend,
    render_tree_svg,
)
from frontend.tree_view import tree_view_json

SVG = "{http://www.w3.org/2000/svg}"


def _with_branch(data: dict[str, Any], origin: int, *, k: int = 3, job: int = 9) -> dict[str, Any]:
    """The API's shape (docs/API.md): a branch group of k children of `origin`, each with an
    ODE tail to a leaf; branch node ids are their own id space (1, 2, ... collide on purpose
    with nothing here, but they would with a real tree's small ids)."""
    nodes = {n["id"]: n for n in data["nodes"]}
    start = nodes[origin]["step_index"]
    steps = data["steps"]
    out, next_id = [], 1
    for child in range(k):
        parent = None
        for step in range(start + 1, steps + 1):
            out.append(
                {
                    "id": next_id,
                    "node_index": next_id - 1,
                    "parent_id": parent,
                    "step_index": step,
                    "t": 1 - step / steps,
                    "sigma": 1 - step / steps,
                    "is_leaf": step == steps,
                    "log_prob": -1.0 if step == start + 1 else None,
                    "reward": 5.0 + child if step == steps else None,
                    "advantage": None,
                    "image_url": None,
                }
            )
            parent = next_id
            next_id += 1
    branched = copy.deepcopy(data)
    branched["branches"] = [
        {"id": 1, "job_id": job, "job_status": "succeeded", "node_id": origin, "k": k, "nodes": out}
    ]
    return branched


def _positions(svg: str) -> dict[str, tuple[str, str]]:
    root = ET.fromstring(svg)
    out = {}
    for g in root.iter(f"{SVG}g"):
        if "tn" in (g.get("class") or "").split():
            box = g.find(f"{SVG}rect")
            assert box is not None
            out[g.get("data-node-id", "")] = (box.get("x", ""), box.get("y", ""))
    return out


def test_a_branch_keeps_the_training_tree_in_place_and_its_caption() -> None:
    data = tree_json(k=3, depth=3, steps=10, window_start=2)
    plain = Tree.from_json(data)
    # The origin: a window node whose siblings must not move.
    origin = next(n for n in plain.nodes if n.step_index == 4)
    branched = Tree.from_json(_with_branch(data, origin.id))
    assert len(branched.nodes) == len(plain.nodes) and len(branched.branches) == 3 * 6
    assert all(n.id < 0 for n in branched.branches)  # their own id space, negated
    before, after = _positions(render_tree_svg(plain)), _positions(render_tree_svg(branched))
    for node_id, place in before.items():
        assert after[node_id] == place, f"training node {node_id} moved"
    assert len(after) == len(before) + 6  # 3 children and 3 leaves drawn in the overlay
    root = ET.fromstring(render_tree_svg(branched))
    overlay = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "branch-overlay")
    drawn = [g for g in overlay.iter(f"{SVG}g") if "tn" in (g.get("class") or "")]
    assert len(drawn) == 6 and all("branched" in (g.get("class") or "") for g in drawn)
    # The caption: 27 training leaves and their mean, whatever the branch's leaves scored (5+).
    cap_plain, cap = render.tree_caption(plain), render.tree_caption(branched)
    assert "27 leaves" in cap and 'mean <span data-field="mean">0.500' in cap
    assert (
        cap_plain.split("· best")[1].removesuffix("</div>")
        == cap.split("· best")[1].split(" · plus")[0]
    )
    assert "18 branch states from 1 branch job (not counted)" in cap
    # The page offers the overlay toggle when there are branch states.
    assert tree_view_json(branched, layout_tree(branched))["branches"] == 18
    assert tree_view_json(plain, layout_tree(plain))["branches"] == 0


def test_the_overlay_heading_names_the_policy_that_grew_the_branches() -> None:
    data = tree_json(k=3, depth=3, steps=10, window_start=2)
    origin = next(n for n in Tree.from_json(data).nodes if n.step_index == 4)
    branched = _with_branch(data, origin.id)
    unknown = Tree.from_json(branched)  # an API from before branches named their policy
    assert tree_view_json(unknown, layout_tree(unknown))["overlay_label"] == "branch results"
    branched["branches"][0]["policy"] = {"text": "job 1's checkpoint of epoch 4", "epoch": 4}
    tree = Tree.from_json(branched)
    assert tree_view_json(tree, layout_tree(tree))["overlay_label"] == (
        "branch results · grown with job 1's checkpoint of epoch 4"
    )
    second = copy.deepcopy(branched["branches"][0])
    second.update(id=2, job_id=99, policy={"text": "the base model"})
    second["nodes"] = [{**n, "id": n["id"] + 100} for n in second["nodes"]]
    for n in second["nodes"]:
        n["parent_id"] = n["parent_id"] + 100 if n["parent_id"] is not None else None
    branched["branches"].append(second)
    two = Tree.from_json(branched)
    assert tree_view_json(two, layout_tree(two))["overlay_label"].startswith(
        "branch results · grown with 2 policies"
    )


def test_a_branch_below_the_last_split_adds_a_step_without_moving_the_training_rows() -> None:
    """Branching from a child of the window's last split (step 5 here) grows children at step 6,
    a step the training tree draws no row for (its chains collapse to the leaves at step 10):
    that row sits between the training rows around it, and no training node moves, neither in
    the SVG nor in the canvas view's places (x, row_y[r])."""
    data = tree_json(k=3, depth=3, steps=10, window_start=2)
    plain = Tree.from_json(data)
    origin = next(n for n in plain.nodes if n.step_index == 5)
    branched = Tree.from_json(_with_branch(data, origin.id))
    before, after = _positions(render_tree_svg(plain)), _positions(render_tree_svg(branched))
    assert {node_id: after[node_id] for node_id in before} == before
    lay_plain, lay = layout_tree(plain), layout_tree(branched)
    assert 6 not in lay_plain.rows and 6 in lay.rows
    assert lay.height == lay_plain.height
    between = lay.row_y[lay.rows.index(6)]
    assert lay.row_y[lay.rows.index(5)] < between < lay.row_y[lay.rows.index(10)]

    def places(tree: Tree) -> dict[int, tuple[float, float]]:
        view = tree_view_json(tree, layout_tree(tree))
        nodes = view["nodes"]
        return {
            nodes["id"][i]: (nodes["x"][i], view["row_y"][nodes["r"][i]])
            for i in range(len(nodes["id"]))
            if not nodes["f"][i] & 4
        }

    assert places(branched) == places(plain)


def test_the_legend_draws_the_branch_frame_as_the_tree_does() -> None:
    data = tree_json()
    origin = next(n for n in Tree.from_json(data).nodes if n.step_index == 4)
    tree = Tree.from_json(_with_branch(data, origin.id))
    lay = layout_tree(tree)
    drawn = ET.fromstring(render_tree_svg(tree, layout=lay))
    frames = [r for r in drawn.iter(f"{SVG}rect") if r.get("class") == "branch-outline"]
    assert frames
    legend = ET.fromstring(render_tree_legend(lay.scales))
    sample = next(r for r in legend.iter(f"{SVG}rect") if r.get("class") == "branch-outline")
    style = ("stroke", "stroke-width", "stroke-dasharray", "rx", "fill")
    assert {a: frames[0].get(a) for a in style} == {a: sample.get(a) for a in style}
    assert branch_outline(0, 0, 10).count("stroke-dasharray") == 1


def test_a_256_leaf_tree_lays_out_fast_with_fold_and_rank_data() -> None:
    tree = Tree.from_json(tree_json(k=4, depth=4, steps=10, window_start=2))
    started = time.perf_counter()
    lay = layout_tree(tree)
    svg = render_tree_svg(tree, layout=lay, sources={}, fallback=False)
    elapsed = time.perf_counter() - started
    assert len(lay.leaves) == 256 and elapsed < 2.0, elapsed  # a hang guard on a shared CPU
    root = ET.fromstring(svg)
    assert float(root.get("data-root-x", "0")) == lay.visible[lay.roots[0]].x
    best, worst = ranked_leaves(lay)
    assert root.get("data-best") == " ".join(map(str, best)) and len(best) == 5
    rewards = [lay.visible[i].node.reward or 0 for i in best]
    assert rewards == sorted(rewards, reverse=True) and rewards[0] == 1.0
    assert (lay.visible[worst[0]].node.reward or 0) == 0.0
    folds = [g for g in root.iter(f"{SVG}g") if g.get("class") == "fold"]
    assert len(folds) == 1 + 4 + 16 + 64  # every node with several children
    # Without fallback, nothing is loaded from the API by the browser (thumbnails stream in).
    assert root.find(f".//{SVG}image") is None
    leaf = next(g for g in root.iter(f"{SVG}g") if g.get("data-node-id") == str(best[0]))
    assert len(leaf.get("data-anc", "").split()) == 6  # root, branch point, 4 window levels


def test_big_trees_are_drawn_compact_and_small_ones_keep_hover_texts() -> None:
    tree = Tree.from_json(tree_json(k=4, depth=4, steps=10, window_start=2))
    big = render_tree_svg(tree, sources={}, fallback=False)
    small = render_tree_svg(Tree.from_json(tree_json(k=3, depth=3)))
    assert "<title>" not in big and len(big) < 300_000
    assert small.count("<title>") > 100  # every node and edge explains itself on hover
