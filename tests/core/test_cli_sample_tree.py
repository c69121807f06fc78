"""`treegrpo sample-tree`: the tree.json contract, its counts, structure and advantage rules."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from treegrpo.cli import main
from treegrpo.tree import recorded_state_count


def _sample(
    tmp_path: Path,
    k: int,
    depth: int,
    steps: int,
    start: int,
    backup: str,
    model: str = "tiny-random",
) -> dict[str, Any]:
    out = tmp_path / f"tree-{k}-{depth}-{steps}-{start}-{backup}-{model}"
    code = main([
        "sample-tree", "--model", model, "--prompt", "a bright square", "--k", str(k),
        "--depth", str(depth), "--steps", str(steps), "--window-start", str(start),
        "--seed", "3", "--reward", "brightness", "--backup", backup, "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    document: dict[str, Any] = json.loads((out / "tree.json").read_text())
    document["_dir"] = out
    return document


def _children(nodes: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    children: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for node in nodes:
        if node["parent_id"] is not None:
            children[node["parent_id"]].append(node)
    return children


def _leaves_under(node_id: int, children: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    kids = children.get(node_id, [])
    if not kids:
        return []
    out = []
    for kid in kids:
        out.extend([kid] if kid["is_leaf"] else _leaves_under(kid["id"], children))
    return out


def test_paper_default_tree_has_229_nodes_and_the_documented_fields(tmp_path: Path) -> None:
    doc = _sample(tmp_path, 3, 3, 10, 0, "mean")
    # 1 + s + (k^(d+1) - k)/(k - 1) + k^d (T - s - d) = 1 + 0 + 39 + 27 * 7 = 229
    assert len(doc["nodes"]) == 229 == recorded_state_count(3, 3, 10, 0)
    for key, value in {"prompt": "a bright square", "model": "tiny-random", "k": 3, "depth": 3,
                       "steps": 10, "window_start": 0, "seed": 3, "reward": "brightness",
                       "backup": "mean"}.items():  # fmt: skip
        assert doc[key] == value, key
    expected = {"id", "parent_id", "step_index", "depth", "t", "sigma", "is_leaf", "log_prob",
                "reward", "advantage", "image"}  # fmt: skip
    for node in doc["nodes"]:
        assert expected <= node.keys()
        image = doc["_dir"] / node["image"]
        assert not Path(node["image"]).is_absolute() and image.exists()
    with Image.open(doc["_dir"] / doc["nodes"][0]["image"]) as png:
        assert png.size[0] >= 64  # 8x8 latents are upscaled to be visible


@pytest.mark.parametrize(
    ("k", "depth", "steps", "start"), [(3, 3, 10, 0), (2, 2, 6, 2), (2, 3, 5, 1), (4, 1, 4, 2)]
)
def test_structure_and_counts(tmp_path: Path, k: int, depth: int, steps: int, start: int) -> None:
    nodes = _sample(tmp_path, k, depth, steps, start, "mean")["nodes"]
    assert len(nodes) == recorded_state_count(k, depth, steps, start)
    by_id = {n["id"]: n for n in nodes}
    assert len(by_id) == len(nodes)
    roots = [n for n in nodes if n["parent_id"] is None]
    assert len(roots) == 1 and roots[0]["step_index"] == 0 and roots[0]["depth"] == 0
    children = _children(nodes)
    for node in nodes:
        if node["parent_id"] is not None:
            parent = by_id[node["parent_id"]]
            assert node["step_index"] == parent["step_index"] + 1
            sde = start <= parent["step_index"] < start + depth
            assert node["depth"] == parent["depth"] + (1 if sde else 0)
        n_children = len(children.get(node["id"], []))
        if node["is_leaf"]:
            assert n_children == 0 and node["step_index"] == steps and node["depth"] == depth
            assert node["reward"] is not None
        else:
            assert node["reward"] is None
            assert n_children == (k if start <= node["step_index"] < start + depth else 1)
        # log_prob only on nodes made by an SDE step
        made_by_sde = start < node["step_index"] <= start + depth
        assert (node["log_prob"] is not None) == made_by_sde
        assert node["t"] >= 0 and node["sigma"] >= 0
    assert sum(n["is_leaf"] for n in nodes) == k**depth
    # sigma falls from 1 (noise) to 0 (clean) for the flow model
    assert by_id[roots[0]["id"]]["sigma"] == pytest.approx(1.0)
    assert all(n["sigma"] == 0 for n in nodes if n["is_leaf"])


def _leaf_z(nodes: list[dict[str, Any]]) -> dict[int, float]:
    leaves = [n for n in nodes if n["is_leaf"]]
    rewards = [n["reward"] for n in leaves]
    mean = sum(rewards) / len(rewards)
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))
    return {n["id"]: (n["reward"] - mean) / (std + 1e-8) for n in leaves}


@pytest.mark.parametrize("backup", ["mean", "logprob_softmax", "depth_norm"])
def test_advantages_follow_the_backup(tmp_path: Path, backup: str) -> None:
    k, depth, steps, start = 3, 2, 6, 1
    nodes = _sample(tmp_path, k, depth, steps, start, backup)["nodes"]
    by_id = {n["id"]: n for n in nodes}
    children = _children(nodes)
    leaf_z = _leaf_z(nodes)
    for leaf_id, z in leaf_z.items():
        assert by_id[leaf_id]["advantage"] == pytest.approx(z, abs=1e-4)

    def value(node: dict[str, Any]) -> float:
        """What the backup assigns to a node, recomputed from the leaves and log-probs."""
        under = [leaf_z[leaf["id"]] for leaf in _leaves_under(node["id"], children)] or [
            leaf_z[node["id"]]
        ]
        if backup == "mean":
            return sum(under) / len(under)
        if backup == "logprob_softmax":
            if node["is_leaf"] or node["step_index"] >= start + depth:
                return sum(under) / len(under)  # a single chain to one leaf
            kids = children[node["id"]]
            weights = [math.exp(kid["log_prob"]) for kid in kids]
            return sum(w * value(kid) for w, kid in zip(weights, kids, strict=True)) / sum(weights)
        raise AssertionError

    sde_nodes = [n for n in nodes if start < n["step_index"] <= start + depth]
    branch_point = next(n for n in nodes if n["step_index"] == start)
    if backup == "depth_norm":
        # Nodes of one depth: mean leaf z-score of each, z-scored among themselves.
        for level in range(1, depth + 1):
            level_nodes = [n for n in sde_nodes if n["depth"] == level]
            means = [value_mean(n, children, leaf_z) for n in level_nodes]
            mu = sum(means) / len(means)
            sd = math.sqrt(sum((m - mu) ** 2 for m in means) / len(means))
            for node, m in zip(level_nodes, means, strict=True):
                assert node["advantage"] == pytest.approx((m - mu) / (sd + 1e-8), abs=1e-3)
        assert branch_point["advantage"] == pytest.approx(0.0, abs=1e-6)  # one node at depth 0
    else:
        for node in sde_nodes:
            assert node["advantage"] == pytest.approx(value(node), abs=1e-4)
        assert branch_point["advantage"] == pytest.approx(value(branch_point), abs=1e-4)
    # Every other non-leaf node carries no advantage.
    for node in nodes:
        if not node["is_leaf"] and node not in sde_nodes and node is not branch_point:
            assert node["advantage"] is None


def value_mean(
    node: dict[str, Any], children: dict[int, list[dict[str, Any]]], leaf_z: dict[int, float]
) -> float:
    under = [leaf_z[leaf["id"]] for leaf in _leaves_under(node["id"], children)]
    return sum(under) / len(under) if under else leaf_z[node["id"]]


def test_ddim_family_and_bad_windows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _sample(tmp_path, 2, 2, 5, 1, "mean", model="tiny-random-ddim")
    assert len(doc["nodes"]) == recorded_state_count(2, 2, 5, 1)
    assert all(n["log_prob"] is None or math.isfinite(n["log_prob"]) for n in doc["nodes"])
    code = main(["sample-tree", "--prompt", "x", "--k", "3", "--depth", "3", "--steps", "10",
                 "--window-start", "8", "--out", str(tmp_path / "bad")])  # fmt: skip
    assert code == 2
    assert "tree.window_start" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
