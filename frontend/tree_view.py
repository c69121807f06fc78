"""A laid-out tree as the compact, columnar JSON the browser draws (frontend/static/tree.js).

    view = tree_view_json(tree, layout_tree(tree), atlases=[...])

The layout stays in Python (frontend/tree_svg.py: ODE-chain collapsing, the branch overlay,
rows by denoising step); the browser gets only the drawn nodes, one entry per node in each
column, so a 256-leaf tree (598 drawn nodes) is ~30 KB where its SVG was 254 KB without images
and 2-3 MB with them. Columns (same order, `i` is a node's position):

    id    node id (tree_nodes id; a branch node's id negated, as frontend/client.Tree has it)
    p     parent's position, -1 for a root
    x     centre x (px at zoom 1); r: row (rows[r] is its step, row_y[r] its centre y, sigmas[r]
          that row's sigma)
    f     flags: 1 leaf (drawn without children), 2 made by an SDE step, 4 grown by a branch
          (drawn in the overlay), 8 grown by the branch just run, 16 has a fold button
    n     node_index; st: denoising steps on its incoming edge
    rw, ad, lp, sg: reward, advantage, log-prob, sigma (null when unknown; 4 decimals)
    a, t  which atlas (index into `atlases`) and tile slot; -1: no tile (drawn without image)

Colours come from `scales` in the browser; `best_path`, `best` and `worst` are positions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from frontend import render
from frontend.client import Tree
from frontend.tree_svg import (
    GUTTER,
    LEAF,
    NODE,
    PAD,
    ROW,
    TreeLayout,
    best_path,
    ranked_leaves,
    render_tree_legend,
)

RANKED = 5
LEAF_FLAG, SDE_FLAG, BRANCH_FLAG, NEW_FLAG, FOLD_FLAG = 1, 2, 4, 8, 16


@dataclass(frozen=True)
class AtlasRef:
    """One atlas the view draws from: `file` is what reaches the page (a Gradio FileData dict,
    or any URL string), `slots` maps node ids (as the view numbers them) to tile slots."""

    file: Any
    tile: int
    columns: int
    slots: Mapping[int, int]


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def overlay_label(tree: Tree) -> str:
    """The branch overlay's heading, naming the policy that grew its results (issue 28
    defect 5: a branch was grown by the base model or the nearest later checkpoint, and only the
    job log said which)."""
    grown = sorted({n.grown_with for n in tree.branches if n.grown_with})
    if len(grown) == 1:
        return f"branch results · grown with {grown[0]}"
    if grown:
        return (
            f"branch results · grown with {len(grown)} policies (each node's panel names its own)"
        )
    return "branch results"


def tree_view_json(
    tree: Tree,
    lay: TreeLayout,
    *,
    atlases: Sequence[AtlasRef] = (),
    new_branch_job: int | None = None,
    pixelated: bool = False,
) -> dict[str, Any]:
    """The view of `tree` laid out as `lay` (see the module docstring for the columns)."""
    order = list(lay.visible)
    pos = {node_id: i for i, node_id in enumerate(order)}
    cols: dict[str, list[Any]] = {
        name: [] for name in ("id", "p", "x", "r", "f", "n", "st", "rw", "ad", "lp", "sg", "a", "t")
    }
    tiles = {
        node_id: (which, slot)
        for which, ref in enumerate(atlases)
        for node_id, slot in ref.slots.items()
    }
    for node_id in order:
        vis = lay.visible[node_id]
        node = vis.node
        flags = (LEAF_FLAG if not vis.children else 0) | (SDE_FLAG if node.made_by_sde else 0)
        if vis.overlay or node.branch_job_id is not None:
            flags |= BRANCH_FLAG
        if new_branch_job is not None and node.branch_job_id == new_branch_job:
            flags |= NEW_FLAG
        if len(vis.children) > 1:
            flags |= FOLD_FLAG
        which, slot = tiles.get(node_id, (-1, -1))
        cols["id"].append(node.id)
        cols["p"].append(pos[vis.parent] if vis.parent is not None else -1)
        cols["x"].append(round(vis.x, 1))
        cols["r"].append(vis.row)
        cols["f"].append(flags)
        cols["n"].append(node.node_index)
        cols["st"].append(vis.steps)
        cols["rw"].append(_round(node.reward))
        cols["ad"].append(_round(node.advantage))
        cols["lp"].append(_round(node.log_prob))
        cols["sg"].append(_round(node.sigma))
        cols["a"].append(which)
        cols["t"].append(slot)
    sigmas: list[float | None] = []
    for step in lay.rows:
        sample = next(v.node for v in lay.visible.values() if v.node.step_index == step)
        sigmas.append(_round(sample.sigma, 3))
    summary = tree.summary
    start, end = summary.window_start, summary.window_start + summary.depth
    window = [i for i, step in enumerate(lay.rows) if start <= step <= end]
    best, worst = ranked_leaves(lay, RANKED)
    return {
        "tree": summary.id,
        "job": summary.job_id,
        "k": summary.k,
        "depth": summary.depth,
        "width": lay.width,
        "height": lay.height,
        "geometry": {"gutter": GUTTER, "pad": PAD, "row": ROW, "node": NODE, "leaf": LEAF},
        "rows": lay.rows,
        "row_y": [round(y, 1) for y in lay.row_y],
        "sigmas": sigmas,
        "window": [window[0], window[-1]] if summary.depth > 0 and window else None,
        "overlay_x": lay.overlay_x,
        "roots": [pos[r] for r in lay.roots],
        "leaves": len(lay.leaves),
        "scales": {
            "advantage": lay.scales.advantage,
            "reward_low": lay.scales.reward_low,
            "reward_high": lay.scales.reward_high,
        },
        "best_path": [pos[i] for i in best_path(lay)],
        "best": [pos[i] for i in best],
        "worst": [pos[i] for i in worst],
        "pixelated": pixelated,
        "new_branch_job": new_branch_job,
        "branches": len(tree.branches),
        "overlay_label": overlay_label(tree),
        "caption": render.tree_caption(tree),
        "legend": render_tree_legend(lay.scales),
        "atlases": [
            {"file": ref.file, "tile": ref.tile, "columns": ref.columns} for ref in atlases
        ],
        "nodes": cols,
    }
