"""A logged TreeGRPO tree drawn as an SVG string: a pure function of the tree's JSON.

    svg = render_tree_svg(Tree.from_json(api_json), selected=node_id)

What it shows (docs/TREEGRPO.md §3 and §5):
- Every recorded state is a node, but a chain of deterministic ODE steps (a node with one child
  that was not drawn by an SDE step) is collapsed into ONE dashed grey edge labelled with its step
  count: the shared prefix before the SDE window, and each leaf's ODE tail after it.
- Visible nodes: the root, every node drawn by an SDE step (it has a log-prob), every node with
  more or fewer than one child, and the leaves. Each shows its predicted clean image.
- SDE edges are coloured by the advantage of the node they lead to on a diverging scale (red
  negative, grey zero, blue positive; symmetric around 0) and thicken with |advantage|; leaves are
  framed in their reward's colour on a sequential (viridis) scale; `render_tree_legend` draws both.
- Nodes grown by "branch again" have a dashed frame; those of `new_branch_job` a green one.
- Rows are the distinct denoising steps of visible nodes (root on top, leaves at the bottom) with
  the step index and sigma in a left gutter; the SDE window rows sit on a tinted band.

Every node and edge carries `data-node-id` (the tree_nodes id) for the click handler; all text
goes through html.escape. Output is well-formed XML (the tests parse it).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from frontend.client import Tree, TreeNode, artifact_href
from frontend.render import fmt

# Geometry (px, at zoom 1).
GUTTER = 92  # left column of step labels
PAD = 14
LEAF = 36  # leaf thumbnail
NODE = 44  # internal node thumbnail
SLOT = 46  # horizontal room per leaf
ROW = 98  # vertical distance between rows
FRAME = 3  # reward frame width around leaves
LABEL_H = 14  # room under a leaf for its reward

ODE_EDGE = "#9aa0a6"
NEUTRAL_EDGE = "#9aa0a6"
SELECTED = "#f59e0b"
NEW_BRANCH = "#16a34a"
BRANCHED = "#7c3aed"
WINDOW_BAND = "#eef2ff"
BEST_PATH = "#fcd34d"

# Diverging scale for advantages (ColorBrewer RdBu ends, a grey centre that shows on white).
_DIVERGING = (
    (-1.0, (0xB2, 0x18, 0x2B)),
    (-0.5, (0xEF, 0x8A, 0x62)),
    (0.0, (0xC4, 0xC4, 0xC4)),
    (0.5, (0x67, 0xA9, 0xCF)),
    (1.0, (0x21, 0x66, 0xAC)),
)
# Sequential scale for rewards (viridis).
_SEQUENTIAL = (
    (0.0, (0x44, 0x01, 0x54)),
    (0.25, (0x3B, 0x52, 0x8B)),
    (0.5, (0x21, 0x91, 0x8C)),
    (0.75, (0x5E, 0xC9, 0x62)),
    (1.0, (0xFD, 0xE7, 0x25)),
)


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _interpolate(stops: Sequence[tuple[float, tuple[int, int, int]]], x: float) -> str:
    x = min(max(x, stops[0][0]), stops[-1][0])
    for (x0, c0), (x1, c1) in pairwise(stops):
        if x <= x1:
            f = 0.0 if x1 == x0 else (x - x0) / (x1 - x0)
            rgb = tuple(round(a + (b - a) * f) for a, b in zip(c0, c1, strict=True))
            return "#{:02x}{:02x}{:02x}".format(*rgb)
    return "#{:02x}{:02x}{:02x}".format(*stops[-1][1])


def advantage_colour(advantage: float, scale: float) -> str:
    """Diverging colour of `advantage` on a scale symmetric around 0 that ends at +-`scale`."""
    return _interpolate(_DIVERGING, advantage / scale if scale > 0 else 0.0)


def reward_colour(reward: float, low: float, high: float) -> str:
    """Sequential (viridis) colour of `reward` between the tree's lowest and highest leaf."""
    span = high - low
    return _interpolate(_SEQUENTIAL, (reward - low) / span if span > 0 else 1.0)


def _num(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


@dataclass
class _Vis:
    """A visible node and the collapsed edge that leads into it."""

    node: TreeNode
    parent: int | None  # id of the visible parent
    steps: int  # denoising steps on the incoming edge (hidden chain nodes + 1)
    hidden: int  # chain nodes collapsed into the incoming edge
    children: list[int] = field(default_factory=list)
    x: float = 0.0
    row: int = 0
    y: float = 0.0  # centre y (px at zoom 1): its row's place, TreeLayout.row_y[row]
    overlay: bool = False  # grown by a branch job, drawn beside the training tree
    ancestors: tuple[int, ...] = ()  # visible ancestors, root first


@dataclass(frozen=True)
class TreeScales:
    """The colour scales a tree was drawn with (the legend shows them)."""

    advantage: float  # max |advantage| over the coloured edges (>0)
    reward_low: float | None
    reward_high: float | None


@dataclass
class TreeLayout:
    visible: dict[int, _Vis]
    roots: list[int]
    rows: list[int]  # step index of each row
    leaves: list[int]  # visible training leaf ids, left to right
    scales: TreeScales
    width: int
    height: int
    overlay_leaves: list[int] = field(default_factory=list)  # branch leaves, right of the tree
    overlay_x: float = 0.0  # where the branch overlay starts (0: no overlay)
    row_y: list[float] = field(default_factory=list)  # centre y of each row (px at zoom 1)


def branch_outline(x: float, y: float, size: float, *, latest: bool = False) -> str:
    """The dashed frame of a node grown by "branch again" (green: the branch just run). The
    legend draws its sample with this same function, so the two cannot differ."""
    colour = NEW_BRANCH if latest else BRANCHED
    return (
        f'<rect class="branch-outline" x="{x:.1f}" y="{y:.1f}" width="{size:.1f}" '
        f'height="{size:.1f}" rx="3" fill="none" stroke="{colour}" stroke-width="2" '
        'stroke-dasharray="3 2"/>'
    )


def _is_ode_chain(node: TreeNode, n_children: int) -> bool:
    return n_children == 1 and not node.made_by_sde and node.parent_id is not None


def _children_of(nodes: Sequence[TreeNode]) -> dict[int, list[TreeNode]]:
    children: dict[int, list[TreeNode]] = {}
    for node in nodes:
        if node.parent_id is not None and node.parent_id != node.id:
            children.setdefault(node.parent_id, []).append(node)
    for kids in children.values():
        kids.sort(key=lambda n: (n.node_index, n.id))
    return children


def _walk(
    start: list[tuple[TreeNode, int | None, int]],
    children: dict[int, list[TreeNode]],
    visible: dict[int, _Vis],
    seen: set[int],
    *,
    overlay: bool,
) -> None:
    """Add the visible nodes under `start` (node, nearest visible ancestor, hidden count),
    collapsing ODE chains."""
    stack = list(reversed(start))
    while stack:
        node, anchor, hidden = stack.pop()
        if node.id in seen:  # malformed input (a cycle): draw each node once
            continue
        seen.add(node.id)
        kids = children.get(node.id, [])
        if anchor is not None and _is_ode_chain(node, len(kids)):
            stack.append((kids[0], anchor, hidden + 1))
            continue
        steps = node.step_index - visible[anchor].node.step_index if anchor is not None else 0
        ancestors = (*visible[anchor].ancestors, anchor) if anchor is not None else ()
        visible[node.id] = _Vis(
            node=node,
            parent=anchor,
            steps=steps,
            hidden=hidden,
            overlay=overlay,
            ancestors=ancestors,
        )
        if anchor is not None and overlay == visible[anchor].overlay:
            visible[anchor].children.append(node.id)
        for kid in reversed(kids):
            stack.append((kid, node.id, 0))


def layout_tree(tree: Tree) -> TreeLayout:
    """Collapse ODE chains and place the visible nodes (leaves evenly, parents above the middle
    of their children, rows by denoising step). The training tree is placed from its own nodes
    only, so a branch never moves it; branch results are placed to its right (an overlay), each
    joined to the node it was grown from."""
    by_id = {n.id: n for n in tree.nodes}
    children = _children_of(tree.nodes)
    roots = sorted(
        (
            n
            for n in tree.nodes
            if n.parent_id is None or n.parent_id not in by_id or n.parent_id == n.id
        ),
        key=lambda n: (n.node_index, n.id),
    )
    visible: dict[int, _Vis] = {}
    seen: set[int] = set()
    _walk([(r, None, 0) for r in roots], children, visible, seen, overlay=False)
    training = set(visible)
    for vis in visible.values():
        vis.children.sort(key=lambda i: (visible[i].node.node_index, i))

    # Branch results: each group hangs from the nearest drawn ancestor of its origin.
    branch_children = _children_of(tree.branches)
    branch_ids = {n.id for n in tree.branches}
    origins: list[tuple[TreeNode, int | None]] = []
    for node in sorted(tree.branches, key=lambda n: (n.branch_job_id or 0, n.node_index, n.id)):
        if node.parent_id in branch_ids:
            continue
        anchor = node.parent_id
        while anchor is not None and anchor not in visible and anchor in by_id:
            anchor = by_id[anchor].parent_id
        origins.append((node, anchor if anchor in visible else None))
    _walk(
        [(n, a, 0) for n, a in origins],
        {k: v for k, v in branch_children.items()},
        visible,
        seen,
        overlay=True,
    )

    rows = sorted({v.node.step_index for v in visible.values()})
    row_of = {step: i for i, step in enumerate(rows)}
    row_y = _row_places(rows, {visible[i].node.step_index for i in training})
    leaves: list[int] = []
    overlay_leaves: list[int] = []
    root_ids = [r.id for r in roots if r.id in visible]

    def place(node_id: int, out: list[int], offset: float) -> None:
        vis = visible[node_id]
        vis.row = row_of[vis.node.step_index]
        vis.y = row_y[vis.row]
        if not vis.children:
            vis.x = offset + SLOT * len(out) + SLOT / 2
            out.append(node_id)
            return
        for kid in vis.children:
            place(kid, out, offset)
        vis.x = (visible[vis.children[0]].x + visible[vis.children[-1]].x) / 2

    # Iterative-depth trees are shallow (T <= ~50 rows); recursion depth is the visible depth.
    for root in root_ids:
        place(root, leaves, GUTTER + PAD)
    overlay_x = 0.0
    overlay_roots = [n.id for n, _ in origins if n.id in visible]
    if overlay_roots:
        overlay_x = GUTTER + PAD + SLOT * max(1, len(leaves)) + SLOT / 2
        for root in overlay_roots:
            place(root, overlay_leaves, overlay_x + SLOT / 2)

    coloured = [
        abs(v.node.advantage)
        for v in visible.values()
        if v.parent is not None
        and v.node.made_by_sde
        and v.node.advantage is not None
        and v.node.id in training
    ]
    leaf_rewards = [r for r in (visible[i].node.reward for i in leaves) if r is not None]
    scales = TreeScales(
        advantage=max(coloured) if coloured and max(coloured) > 0 else 1.0,
        reward_low=min(leaf_rewards) if leaf_rewards else None,
        reward_high=max(leaf_rewards) if leaf_rewards else None,
    )
    extra = SLOT * (len(overlay_leaves) + 1) if overlay_leaves else 0
    width = int(GUTTER + 2 * PAD + SLOT * max(1, len(leaves)) + extra)
    height = int(PAD + (row_y[-1] if row_y else _y(0)) + NODE / 2 + LABEL_H + 6)
    return TreeLayout(
        visible, root_ids, rows, leaves, scales, width, height, overlay_leaves, overlay_x, row_y
    )


def _row_places(rows: list[int], training_steps: set[int]) -> list[float]:
    """Centre y of each row. The training tree's rows are ROW apart whatever was branched;
    a step that only branch results reach (a branch from a node below the tree's last split
    makes its children one step further down) sits between its neighbouring training rows, so
    branching never moves the training tree."""
    placed = {step: _y(i) for i, step in enumerate(s for s in rows if s in training_steps)}
    known = sorted(placed)
    places: list[float] = []
    for step in rows:
        if step in placed:
            places.append(placed[step])
            continue
        above = [s for s in known if s < step]
        below = [s for s in known if s > step]
        if above and below:
            a, b = above[-1], below[0]
            places.append(placed[a] + (placed[b] - placed[a]) * (step - a) / (b - a))
        elif above:  # past the training tree's deepest row: rows continue ROW apart
            places.append(placed[above[-1]] + ROW * (step - above[-1]))
        else:
            places.append(_y(0) - ROW * (below[0] - step) if below else _y(len(places)))
    return places


def ranked_leaves(lay: TreeLayout, count: int = 5) -> tuple[list[int], list[int]]:
    """The `count` best and worst scored training leaves (ids, best first / worst first)."""
    scored = [i for i in lay.leaves if lay.visible[i].node.reward is not None]
    scored.sort(key=lambda i: -(lay.visible[i].node.reward or 0.0))
    return scored[:count], scored[::-1][:count]


def _y(row: int) -> float:
    return PAD + row * ROW + NODE / 2


def _size(vis: _Vis) -> int:
    """Branching nodes get the larger thumbnail; chains and leaves pack side by side."""
    return NODE if len(vis.children) > 1 else LEAF


def _node_title(node: TreeNode) -> str:
    parts = [f"node {node.node_index}", f"step {node.step_index}"]
    if node.sigma is not None:
        parts.append(f"σ {node.sigma:.3f}")
    if node.reward is not None:
        parts.append(f"reward {node.reward:.3f}")
    if node.advantage is not None:
        parts.append(f"advantage {fmt(node.advantage, 3, signed=True)}")
    if node.log_prob is not None:
        parts.append(f"log-prob {node.log_prob:.3f}")
    if node.branch_job_id is not None:
        parts.append(f"grown by branch job {node.branch_job_id}")
    return " · ".join(parts)


def _edge_ends(parent: _Vis, child: _Vis) -> tuple[float, float, float, float, float]:
    x1, y1 = parent.x, parent.y + _size(parent) / 2
    x2, y2 = child.x, child.y - _size(child) / 2 - (FRAME if not child.children else 0)
    return x1, y1, x2, y2, (y1 + y2) / 2


def best_path(lay: TreeLayout) -> list[int]:
    """Visible node ids from the root down to the best-rewarded leaf ("which branch won")."""
    scored = [i for i in lay.leaves if lay.visible[i].node.reward is not None]
    if not scored:
        return []
    path: list[int] = []
    current: int | None = max(scored, key=lambda i: lay.visible[i].node.reward or 0.0)
    while current is not None and len(path) <= len(lay.visible):
        path.append(current)
        current = lay.visible[current].parent
    return path[::-1]


# Above this many drawn nodes a tree is drawn compact: hover texts become aria-labels and the
# ODE edges lose their step labels (a k=4, d=4 tree: ~600 nodes; ~1,700 fewer elements for the
# page to build on every redraw).
COMPACT_ABOVE = 200


def _edge(parent: _Vis, child: _Vis, scales: TreeScales, compact: bool = False) -> list[str]:
    x1, y1, x2, y2, ym = _edge_ends(parent, child)
    node = child.node
    sde = node.made_by_sde
    if sde and node.advantage is not None:
        colour = advantage_colour(node.advantage, scales.advantage)
        width = 1.5 + 3.5 * min(1.0, abs(node.advantage) / scales.advantage)
        kind = f"SDE · advantage {fmt(node.advantage, 3, signed=True)}"
        dash = ""
    elif sde:
        colour, width, kind, dash = NEUTRAL_EDGE, 1.5, "SDE · no advantage", ""
    else:
        colour, width, kind, dash = ODE_EDGE, 1.5, "ODE (deterministic)", ' stroke-dasharray="5 4"'
    steps = child.steps
    title = (
        f"step {parent.node.step_index} → {node.step_index}: {steps} step"
        f"{'s' if steps != 1 else ''} · {kind}"
    )
    anc = " ".join(str(a) for a in child.ancestors)
    out = [
        f'<g class="edge{" sde" if sde else " ode"}" data-node-id="{node.id}" data-anc="{anc}">'
        + ("" if compact else f"<title>{_esc(title)}</title>")
        + f'<path d="M{x1:.0f},{y1:.0f} C{x1:.0f},{ym:.0f} {x2:.0f},{ym:.0f} {x2:.0f},{y2:.0f}" '
        f'stroke="{colour}" stroke-width="{width:.1f}"{dash}/>'
    ]
    if (not sde or steps > 1) and not compact:
        label = f"{steps} step{'s' if steps != 1 else ''}"
        out.append(
            f'<text class="edge-label" x="{(x1 + x2) / 2:.1f}" y="{ym + 3:.1f}" '
            f'text-anchor="middle" font-size="9" fill="#5f6368" stroke="#ffffff" '
            f'stroke-width="3" paint-order="stroke">{_esc(label)}</text>'
        )
    out.append("</g>")
    return out


def _node(
    vis: _Vis,
    scales: TreeScales,
    *,
    selected: int | None,
    new_branch_job: int | None,
    asset_base: str,
    pixelated: bool,
    sources: Mapping[str, str],
    fallback: bool = True,
    compact: bool = False,
) -> list[str]:
    node = vis.node
    size = _size(vis)
    x, y = vis.x - size / 2, vis.y - size / 2
    is_leaf = not vis.children
    classes = ["tn", "leaf" if is_leaf else "inner"]
    if node.branch_job_id is not None:
        classes.append("branched")
    if new_branch_job is not None and node.branch_job_id == new_branch_job:
        classes.append("new")
    if node.id == selected:
        classes.append("selected")
    title = _node_title(node)
    anc = " ".join(str(a) for a in vis.ancestors)
    # The <title> child is both the hover text and the accessible name (compact: neither; the
    # panel shows the numbers on a click).
    label = ">" if compact else f"><title>{_esc(title)}</title>"
    out = [
        f'<g class="{" ".join(classes)}" data-node-id="{node.id}" data-anc="{anc}" tabindex="0" '
        f'role="button"{label}'
    ]
    # One box per node: its stroke is the leaf's reward frame (or a thin grey edge), so a node
    # stays a handful of elements (a 27-leaf tree is ~70 nodes; the page re-draws them all).
    if is_leaf and node.reward is not None and scales.reward_low is not None:
        stroke = reward_colour(node.reward, scales.reward_low, scales.reward_high or 0.0)
        inset, stroke_width = -FRAME / 2, FRAME
    else:
        stroke, inset, stroke_width = "#5f6368", 0.0, 1
    out.append(
        f'<rect class="box" x="{x + inset:g}" y="{y + inset:g}" '
        f'width="{size - 2 * inset:g}" height="{size - 2 * inset:g}" '
        f'stroke="{stroke}" stroke-width="{stroke_width}"/>'
    )
    href = sources.get(node.image_url) if node.image_url else None
    if href is None and fallback:
        href = artifact_href(node.image_url, asset_base)
    if href is None and node.image_url:
        pass  # streaming: the thumbnail comes with the next render
    elif href:
        render = ' style="image-rendering:pixelated"' if pixelated else ""
        out.append(
            f'<image href="{_esc(href)}" x="{x:.1f}" y="{y:.1f}" width="{size}" height="{size}" '
            f'preserveAspectRatio="xMidYMid slice"{render}/>'
        )
    else:
        out.append(
            f'<text x="{vis.x:.1f}" y="{vis.y + 3:.1f}" text-anchor="middle" '
            f'font-size="9" fill="#5f6368">n/a</text>'
        )
    if node.branch_job_id is not None:
        pad = FRAME + 2
        out.append(
            branch_outline(x - pad, y - pad, size + 2 * pad, latest="new" in classes),
        )
    if len(vis.children) > 1:
        # Fold / unfold the subtree below (the page hides what has this node as an ancestor).
        fy = y + size + 7
        out.append(
            f'<g class="fold" data-fold="{node.id}" role="button" aria-label="fold the subtree">'
            + ("" if compact else "<title>fold or unfold the subtrees below</title>")
            + f'<circle cx="{vis.x:.1f}" cy="{fy:.1f}" r="6" fill="#ffffff" stroke="#5f6368"/>'
            f'<text x="{vis.x:.1f}" y="{fy + 3.5:.1f}" text-anchor="middle" font-size="10" '
            'fill="#202124">−</text></g>'
        )
    if is_leaf and node.reward is not None:
        out.append(
            f'<text class="reward" x="{vis.x:g}" y="{y + size + FRAME + 11:g}">'
            f"{node.reward:.2f}</text>"
        )
    out.append("</g>")
    return out


def render_tree_svg(
    tree: Tree,
    *,
    selected: int | None = None,
    new_branch_job: int | None = None,
    asset_base: str = "",
    pixelated: bool = False,
    layout: TreeLayout | None = None,
    sources: Mapping[str, str] | None = None,
    fallback: bool = True,
) -> str:
    """The tree as an `<svg>` element. Thumbnails: `sources[image_url]` when given (data: URIs,
    see frontend/thumbs.py), else the `/api/v1/artifacts/...` URL prefixed with `asset_base`
    (empty when the UI is served by the API itself); with `fallback` False a node missing from
    `sources` is drawn without its image (it streams in with the next render). `pixelated`
    keeps tiny images sharp when scaled up. Branch results are drawn in `g.branch-overlay`, to
    the right of the training tree, which they never move."""
    lay = layout or layout_tree(tree)
    summary = tree.summary
    best, worst = ranked_leaves(lay)
    compact = len(lay.visible) > COMPACT_ABOVE
    root_x = lay.visible[lay.roots[0]].x if lay.roots else 0.0
    label = (
        f"Tree {summary.id} of job {summary.job_id}, epoch {summary.epoch}: "
        f"{len(lay.visible)} drawn nodes, {len(lay.leaves)} leaves. Prompt: {summary.prompt}"
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="treegrpo-tree" '
        f'data-tree-id="{summary.id}" data-leaves="{len(lay.leaves)}" '
        f'data-nodes="{len(lay.visible)}" data-branch-nodes="{len(lay.visible) - sum(1 for v in lay.visible.values() if not v.overlay)}" '
        f'data-root-x="{root_x:.1f}" data-best="{" ".join(map(str, best))}" '
        f'data-worst="{" ".join(map(str, worst))}" '
        f'width="{lay.width}" height="{lay.height}" '
        f'viewBox="0 0 {lay.width} {lay.height}" role="img" aria-label="{_esc(label)}" '
        f'font-family="ui-sans-serif, system-ui, sans-serif">'
        # What every edge shares, once (a big tree has ~600 edges).
        "<style>g.edge path{fill:none;stroke-linecap:round}rect.box{fill:#f1f3f4;rx:2px}"
        "text.reward{text-anchor:middle;font-size:10px;fill:#202124}</style>"
    ]
    # The SDE window: a tinted band over its rows, from the branch point to the window's end.
    start, end = summary.window_start, summary.window_start + summary.depth
    window_rows = [i for i, step in enumerate(lay.rows) if start <= step <= end]
    if summary.depth > 0 and window_rows:
        top = lay.row_y[window_rows[0]] - NODE / 2 - 8
        bottom = lay.row_y[window_rows[-1]] + NODE / 2 + 8
        out.append(
            f'<rect class="window-band" x="0" y="{top:.1f}" width="{lay.width}" '
            f'height="{bottom - top:.1f}" fill="{WINDOW_BAND}"/>'
            f'<text x="{lay.width - 8}" y="{top + 13:.1f}" text-anchor="end" font-size="10" '
            f'fill="#4f46e5">'
            f"SDE window (k={summary.k}, d={summary.depth})</text>"
        )
    # Step gutter: each row's denoising step and sigma.
    for row, step in enumerate(lay.rows):
        sample = next(v.node for v in lay.visible.values() if v.node.step_index == step)
        sigma = "" if sample.sigma is None else f"σ {sample.sigma:.2f}"
        y = lay.row_y[row]
        out.append(
            f'<text class="step-label" x="6" y="{y - 2:.1f}" font-size="11" fill="#202124">'
            f"step {step}</text>"
            f'<text x="6" y="{y + 11:.1f}" font-size="10" fill="#5f6368">{_esc(sigma)}</text>'
        )
    # "Which branch won": a gold band under the edges from the root to the best leaf.
    winners = best_path(lay)
    out.append('<g class="best-path">')
    for parent_id, child_id in pairwise(winners):
        x1, y1, x2, y2, ym = _edge_ends(lay.visible[parent_id], lay.visible[child_id])
        out.append(
            f'<path data-node-id="{child_id}" d="M{x1:.1f},{y1:.1f} C{x1:.1f},{ym:.1f} '
            f'{x2:.1f},{ym:.1f} {x2:.1f},{y2:.1f}" fill="none" stroke="{BEST_PATH}" '
            'stroke-width="10" stroke-opacity="0.55" stroke-linecap="round"/>'
        )
    out.append("</g>")
    for overlay in (False, True):
        group = [v for v in lay.visible.values() if v.overlay == overlay]
        if overlay:
            if not group:
                break
            out.append(
                f'<g class="branch-overlay"><text x="{lay.overlay_x + 4:.1f}" y="{PAD - 2}" '
                'font-size="10" fill="#7c3aed">branch results</text>'
            )
        out.append('<g class="edges">')
        for vis in group:
            if vis.parent is not None:
                out.extend(_edge(lay.visible[vis.parent], vis, lay.scales, compact))
        out.append('</g><g class="nodes">')
        for vis in group:
            out.extend(
                _node(
                    vis,
                    lay.scales,
                    selected=selected,
                    new_branch_job=new_branch_job,
                    asset_base=asset_base,
                    pixelated=pixelated,
                    sources=sources or {},
                    fallback=fallback,
                    compact=compact,
                )
            )
        out.append("</g>")
        if overlay:
            out.append("</g>")
    # One selection ring, over the selected node (the page moves it on a click).
    ring = lay.visible.get(selected) if selected is not None else None
    if ring is not None:
        size, pad = _size(ring), FRAME + 4
        rx, ry = ring.x - size / 2 - pad, ring.y - size / 2 - pad
        out.append(
            f'<rect class="selection" x="{rx:.1f}" y="{ry:.1f}" width="{size + 2 * pad}" '
            f'height="{size + 2 * pad}" rx="5" fill="none" stroke="{SELECTED}" '
            'stroke-width="3" pointer-events="none"/>'
        )
    else:
        out.append(
            f'<rect class="selection" x="0" y="0" width="0" height="0" rx="5" fill="none" '
            f'stroke="{SELECTED}" stroke-width="3" pointer-events="none" display="none"/>'
        )
    out.append("</svg>")
    return "".join(out)


def _gradient_bar(stops: Sequence[tuple[float, tuple[int, int, int]]], gid: str) -> str:
    lo, hi = stops[0][0], stops[-1][0]
    parts = [f'<linearGradient id="{gid}" x1="0" x2="1" y1="0" y2="0">']
    for x, rgb in stops:
        colour = "#{:02x}{:02x}{:02x}".format(*rgb)
        parts.append(f'<stop offset="{(x - lo) / (hi - lo):.3f}" stop-color="{colour}"/>')
    parts.append("</linearGradient>")
    return "".join(parts)


def render_tree_legend(scales: TreeScales) -> str:
    """A small SVG legend: the advantage and reward scales with their end values, edge and frame
    styles."""
    adv = scales.advantage
    lo, hi = scales.reward_low, scales.reward_high
    reward_text = (
        (f"{lo:.3f}", f"{hi:.3f}") if lo is not None and hi is not None else ("n/a", "n/a")
    )
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" class="treegrpo-legend" width="1000" '
        'height="54" viewBox="0 0 1000 54" font-family="ui-sans-serif, system-ui, sans-serif" '
        'font-size="11" role="img" aria-label="Legend">'
        f"<defs>{_gradient_bar(_DIVERGING, 'lg-adv')}{_gradient_bar(_SEQUENTIAL, 'lg-rew')}</defs>"
        '<text x="0" y="12" fill="#202124">edge: advantage of the node below</text>'
        '<rect x="0" y="18" width="180" height="10" fill="url(#lg-adv)"/>'
        f'<text x="0" y="42" fill="#5f6368">{fmt(-adv, 2, signed=True)}</text>'
        '<text x="90" y="42" text-anchor="middle" fill="#5f6368">0</text>'
        f'<text x="180" y="42" text-anchor="end" fill="#5f6368">{fmt(adv, 2, signed=True)}</text>'
        '<text x="220" y="12" fill="#202124">leaf frame: reward</text>'
        '<rect x="220" y="18" width="150" height="10" fill="url(#lg-rew)"/>'
        f'<text x="220" y="42" fill="#5f6368">{_esc(reward_text[0])}</text>'
        f'<text x="370" y="42" text-anchor="end" fill="#5f6368">{_esc(reward_text[1])}</text>'
        f'<line x1="410" y1="14" x2="450" y2="14" stroke="{ODE_EDGE}" stroke-width="1.5" '
        'stroke-dasharray="5 4"/>'
        '<text x="456" y="18" fill="#202124">ODE chain (collapsed, labelled with its steps)</text>'
        '<line x1="410" y1="36" x2="450" y2="36" stroke="#2166ac" stroke-width="4"/>'
        '<text x="456" y="40" fill="#202124">SDE step (width grows with |advantage|)</text>'
        f'<g class="legend-branched">{branch_outline(712, 4, 16)}</g>'
        '<text x="732" y="18" fill="#202124">grown by branch</text>'
        f'<g class="legend-branched-new">{branch_outline(836, 4, 16, latest=True)}</g>'
        '<text x="856" y="18" fill="#202124">just grown</text>'
        f'<rect x="712" y="28" width="14" height="14" fill="none" stroke="{SELECTED}" '
        'stroke-width="3"/>'
        '<text x="732" y="40" fill="#202124">selected</text>'
        f'<line x1="836" y1="36" x2="876" y2="36" stroke="{BEST_PATH}" stroke-width="10" '
        'stroke-opacity="0.55" stroke-linecap="round"/>'
        '<text x="882" y="40" fill="#202124">path to the best leaf</text>'
        "</svg>"
    )
