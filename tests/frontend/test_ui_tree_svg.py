"""frontend/tree_svg.py on hand-built trees: structure, collapsed ODE chains, colours, escaping."""

from __future__ import annotations

import copy
import time
import xml.etree.ElementTree as ET

from ui_factories import tree_json

from frontend.client import Tree
from frontend.tree_svg import (
    advantage_colour,
    best_path,
    layout_tree,
    render_tree_legend,
    render_tree_svg,
    reward_colour,
)

SVG = "{http://www.w3.org/2000/svg}"
XSS = "<img src=x onerror=alert(1)>"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML or it raises


def _nodes(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if "tn" in (g.get("class") or "").split()]


def _edges(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if "edge" in (g.get("class") or "").split()]


def test_27_leaf_tree_collapses_ode_chains() -> None:
    # T=10, window at step 2, k=3, d=3: recorded states 1 + 1 + 1 (steps 0..2), 3, 9, 27 (window),
    # then 27 per step for steps 6..10: 3 + 39 + 27*5 = 177.
    tree = Tree.from_json(tree_json(k=3, depth=3, steps=10, window_start=2))
    assert len(tree.nodes) == 177
    root = _parse(render_tree_svg(tree))
    nodes = _nodes(root)
    # Drawn: root, branch point (step 2), 3 + 9 + 27 SDE nodes, 27 leaves = 68.
    assert len(nodes) == 68
    assert root.get("data-leaves") == "27"
    assert len([n for n in nodes if "leaf" in n.get("class", "")]) == 27
    # Every drawn node but the root has exactly one incoming edge.
    assert len(_edges(root)) == 67
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "edge-label"]
    # The shared prefix (steps 0 -> 2) and 27 ODE tails (steps 5 -> 10) are one edge each.
    assert labels.count("2 steps") == 1
    assert labels.count("5 steps") == 27
    assert len(labels) == 28  # single SDE steps carry no label
    ode = [e for e in _edges(root) if "ode" in e.get("class", "")]
    assert len(ode) == 28
    for edge in ode:
        path = edge.find(f"{SVG}path")
        assert path is not None and path.get("stroke-dasharray")


def test_rows_are_the_drawn_steps_with_sigma() -> None:
    tree = Tree.from_json(tree_json(k=2, depth=2, steps=6, window_start=1))
    layout = layout_tree(tree)
    assert layout.rows == [0, 1, 2, 3, 6]
    assert len(layout.leaves) == 4
    texts = [t.text for t in _parse(render_tree_svg(tree)).iter(f"{SVG}text")]
    for step in (0, 1, 2, 3, 6):
        assert f"step {step}" in texts


def test_window_at_step_zero_and_ending_at_the_last_step() -> None:
    # No shared prefix and no tails: every edge is an SDE step; nothing is collapsed.
    tree = Tree.from_json(tree_json(k=2, depth=3, steps=3, window_start=0))
    root = _parse(render_tree_svg(tree))
    assert len(_nodes(root)) == len(tree.nodes) == 1 + 2 + 4 + 8
    assert not [e for e in _edges(root) if "ode" in e.get("class", "")]


def test_leaves_sit_left_to_right_and_parents_above_their_children() -> None:
    tree = Tree.from_json(tree_json(k=3, depth=2, steps=4, window_start=1))
    layout = layout_tree(tree)
    xs = [layout.visible[i].x for i in layout.leaves]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    for vis in layout.visible.values():
        if vis.children:
            kids = [layout.visible[c].x for c in vis.children]
            assert min(kids) <= vis.x <= max(kids)
            assert all(layout.visible[c].row > vis.row for c in vis.children)


def test_edges_are_coloured_by_advantage_and_leaves_by_reward() -> None:
    data = tree_json(k=2, depth=1, steps=1, window_start=0)
    tree = Tree.from_json(data)
    root = _parse(render_tree_svg(tree))
    leaves = sorted((n for n in tree.nodes if n.is_leaf), key=lambda n: n.node_index)
    low, high = leaves[0], leaves[-1]  # rewards 0 and 1, advantages -1 and +1
    assert low.advantage == -1.0 and high.advantage == 1.0
    strokes = {}
    for edge in _edges(root):
        path = edge.find(f"{SVG}path")
        assert path is not None
        strokes[int(edge.get("data-node-id", "0"))] = path.get("stroke")
    # Each leaf here is one SDE step below the root, so its edge carries its advantage.
    assert strokes[low.id] == advantage_colour(-1.0, 1.0) == "#b2182b"
    assert strokes[high.id] == advantage_colour(1.0, 1.0) == "#2166ac"
    assert advantage_colour(0.0, 1.0) == "#c4c4c4"
    frames = {
        int(g.get("data-node-id", "0")): next(
            r.get("stroke") for r in g.iter(f"{SVG}rect") if r.get("class") == "box"
        )
        for g in _nodes(root)
        if "leaf" in g.get("class", "")
    }
    assert frames[low.id] == reward_colour(0.0, 0.0, 1.0) == "#440154"
    assert frames[high.id] == reward_colour(1.0, 0.0, 1.0) == "#fde725"


def test_colour_scales_clamp_and_handle_flat_input() -> None:
    assert advantage_colour(5.0, 1.0) == advantage_colour(1.0, 1.0)
    assert advantage_colour(-5.0, 1.0) == advantage_colour(-1.0, 1.0)
    assert advantage_colour(0.3, 0.0) == advantage_colour(0.0, 1.0)  # no scale: neutral
    assert reward_colour(0.5, 0.5, 0.5) == "#fde725"  # all leaves equal: top colour


def test_thumbnails_use_the_api_artifact_urls() -> None:
    tree = Tree.from_json(tree_json(k=3, depth=3))
    root = _parse(render_tree_svg(tree, asset_base="http://127.0.0.1:9000", pixelated=True))
    hrefs = [i.get("href") for i in root.iter(f"{SVG}image")]
    assert len(hrefs) == 68
    assert all(
        h and h.startswith("http://127.0.0.1:9000/api/v1/artifacts/jobs/1/trees/") for h in hrefs
    )
    same_origin = _parse(render_tree_svg(tree))
    assert all(
        (i.get("href") or "").startswith("/api/v1/artifacts/")
        for i in same_origin.iter(f"{SVG}image")
    )


def test_selected_and_branched_nodes_are_marked() -> None:
    data = tree_json(k=2, depth=2, steps=4, window_start=1)
    leaf = next(n for n in data["nodes"] if n["is_leaf"])
    # A branch job regrew 2 children from the first window node.
    origin = next(n for n in data["nodes"] if n["log_prob"] is not None)
    top = max(n["id"] for n in data["nodes"])
    for i in range(2):
        data["nodes"].append(
            dict(
                copy.deepcopy(origin),
                id=top + 1 + i,
                node_index=1000 + i,
                parent_id=origin["id"],
                step_index=origin["step_index"] + 1,
                is_leaf=True,
                reward=0.5,
                advantage=None,
                branch_job_id=77,
            )
        )
    tree = Tree.from_json(data)
    root = _parse(render_tree_svg(tree, selected=leaf["id"], new_branch_job=77))
    by_id = {int(g.get("data-node-id", "0")): g.get("class", "") for g in _nodes(root)}
    assert "selected" in by_id[leaf["id"]]
    rings = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "selection"]
    assert len(rings) == 1 and rings[0].get("display") != "none"
    unselected = _parse(render_tree_svg(tree))
    rings = [r for r in unselected.iter(f"{SVG}rect") if r.get("class") == "selection"]
    assert len(rings) == 1 and rings[0].get("display") == "none"
    assert "branched" in by_id[top + 1] and "new" in by_id[top + 2]
    assert "selected" not in by_id[top + 1]


def test_all_text_is_escaped() -> None:
    data = tree_json(prompt=XSS)
    data["nodes"][0]["image_url"] = '/api/v1/artifacts/x".png"><script>alert(1)</script>'
    svg = render_tree_svg(Tree.from_json(data))
    assert "<img" not in svg and "<script" not in svg
    assert "&lt;img src=x onerror=alert(1)&gt;" in svg
    root = _parse(svg)
    assert XSS in (root.get("aria-label") or "")  # as text, after XML unescaping


def test_malformed_input_does_not_crash() -> None:
    # Unknown parent, a self-parent and a 2-cycle: each node drawn at most once.
    nodes = [
        {"id": 1, "node_index": 0, "parent_id": None, "step_index": 0},
        {"id": 2, "node_index": 1, "parent_id": 99, "step_index": 1},
        {"id": 3, "node_index": 2, "parent_id": 3, "step_index": 1},
        {"id": 4, "node_index": 3, "parent_id": 5, "step_index": 2},
        {"id": 5, "node_index": 4, "parent_id": 4, "step_index": 2},
    ]
    svg = render_tree_svg(Tree.from_json({"id": 1, "nodes": nodes}))
    assert len(_nodes(_parse(svg))) >= 3
    empty = render_tree_svg(Tree.from_json({"id": 2, "nodes": []}))
    assert _parse(empty).get("data-leaves") == "0"


def test_legend_names_both_scales() -> None:
    layout = layout_tree(Tree.from_json(tree_json()))
    legend = render_tree_legend(layout.scales)
    root = _parse(legend)
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "advantage" in texts and "reward" in texts and "ODE chain" in texts
    assert "-1.00" in texts and "+1.00" in texts and "0.000" in texts and "1.000" in texts


def test_rendering_a_27_leaf_tree_is_fast() -> None:
    tree = Tree.from_json(tree_json(k=3, depth=3))
    started = time.perf_counter()
    for _ in range(20):
        render_tree_svg(tree)
    per_tree = (time.perf_counter() - started) / 20
    assert per_tree < 0.05, per_tree


def test_larger_trees_grow_wide_and_stay_valid() -> None:
    # k=3, d=4: 81 leaves; the drawing widens (the page scrolls and zooms it) and stays valid.
    small = layout_tree(Tree.from_json(tree_json(k=3, depth=3)))
    tree = Tree.from_json(tree_json(k=3, depth=4, steps=10, window_start=1))
    layout = layout_tree(tree)
    assert len(layout.leaves) == 81 and layout.width > 2.5 * small.width
    started = time.perf_counter()
    root = _parse(render_tree_svg(tree, layout=layout))
    assert time.perf_counter() - started < 0.2
    assert len(_nodes(root)) == 1 + 1 + 3 + 9 + 27 + 81 + 81


def test_the_path_to_the_best_leaf_is_marked() -> None:
    tree = Tree.from_json(tree_json(k=3, depth=3))
    layout = layout_tree(tree)
    path = best_path(layout)
    best = max((n for n in tree.nodes if n.is_leaf), key=lambda n: n.reward or 0.0)
    # Root, branch point, three window nodes, the best leaf: its whole ancestry as drawn.
    assert path[0] == layout.roots[0] and path[-1] == best.id and len(path) == 6
    root = _parse(render_tree_svg(tree, layout=layout))
    band = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "best-path")
    assert [int(p.get("data-node-id", "0")) for p in band] == path[1:]
