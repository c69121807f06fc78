"""Hand-built API payloads for the dashboard's unit tests (shapes of docs/API.md)."""

from __future__ import annotations

from typing import Any


def tree_json(
    *,
    k: int = 3,
    depth: int = 3,
    steps: int = 10,
    window_start: int = 2,
    tree_id: int = 1,
    job_id: int = 1,
    prompt: str = "a handwritten digit 7",
    images: bool = True,
) -> dict[str, Any]:
    """A tree laid out like treegrpo.tree_record: one node per recorded state and step; the
    shared ODE prefix, k-way SDE branching for `depth` steps from `window_start`, then one ODE
    tail per leaf. Node ids start at 100 (tree_nodes ids differ from node_index)."""
    nodes: list[dict[str, Any]] = []
    frontier: list[dict[str, Any]] = []
    index = 0

    def add(
        parent: dict[str, Any] | None, step: int, sde: bool, adv: float | None
    ) -> dict[str, Any]:
        nonlocal index
        node = {
            "id": 100 + index,
            "node_index": index,
            "parent_id": None if parent is None else parent["id"],
            "depth": 0,
            "step_index": step,
            "t": 1.0 - step / steps,
            "sigma": 1.0 - step / steps,
            "is_leaf": step == steps,
            "log_prob": -1.0 - 0.01 * index if sde else None,
            "reward": None,
            "rewards": None,
            "advantage": adv,
            "image_url": f"/api/v1/artifacts/jobs/{job_id}/trees/epoch-000000/tree-00/images/{index}.png"
            if images
            else None,
            "branch_job_id": None,
        }
        index += 1
        nodes.append(node)
        return node

    root = add(None, 0, False, None)
    frontier = [root]
    for step in range(1, steps + 1):
        new: list[dict[str, Any]] = []
        for parent in frontier:
            in_window = window_start < step <= window_start + depth
            for _ in range(k if in_window else 1):
                new.append(add(parent, step, in_window, 0.0 if in_window else None))
        frontier = new
    leaves = frontier
    for i, leaf in enumerate(leaves):
        leaf["reward"] = i / max(1, len(leaves) - 1)
        leaf["rewards"] = {"digit_judge": leaf["reward"]}
        leaf["advantage"] = 2.0 * leaf["reward"] - 1.0  # -1 .. +1
    # SDE nodes carry the mean advantage of their leaves (the `mean` backup, roughly): summed
    # bottom-up (children come after their parents in `nodes`).
    sums = {n["id"]: (n["advantage"], 1) if n["is_leaf"] else (0.0, 0) for n in nodes}
    for node in reversed(nodes):
        if node["parent_id"] is not None:
            total, count = sums[node["parent_id"]]
            own_total, own_count = sums[node["id"]]
            sums[node["parent_id"]] = (total + own_total, count + own_count)
    for node in nodes:
        if node["log_prob"] is not None and not node["is_leaf"]:
            total, count = sums[node["id"]]
            node["advantage"] = total / count
    rewards = [leaf["reward"] for leaf in leaves]
    return {
        "id": tree_id,
        "job_id": job_id,
        "epoch": 0,
        "index": 0,
        "prompt": prompt,
        "seed": 0,
        "window_start": window_start,
        "k": k,
        "depth": depth,
        "steps": steps,
        "backup": "mean",
        "created_at": "2026-11-20T10:00:00Z",
        "nodes": nodes,
        "leaves": len(leaves),
        "best_reward": max(rewards),
        "mean_reward": sum(rewards) / len(rewards),
    }


def job_json(**overrides: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "id": 1,
        "kind": "train",
        "name": "digits run",
        "status": "running",
        "preset": "digits-treegrpo",
        "algorithm": "treegrpo",
        "config": {"algorithm": "treegrpo", "model": "digits", "epochs": 3},
        "params": {},
        "parent_job_id": None,
        "created_at": "2026-11-20T10:00:00Z",
        "updated_at": "2026-11-20T10:00:05Z",
        "started_at": "2026-11-20T10:00:01Z",
        "finished_at": None,
        "heartbeat_at": "2026-11-20T10:00:05Z",
        "worker": "worker-1",
        "attempt": 1,
        "progress_step": 1,
        "progress_total": 3,
        "progress": 1 / 3,
        "error": None,
        "checkpoint_path": None,
        "latest_reward": 0.75,
    }
    job.update(overrides)
    return job
