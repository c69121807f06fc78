"""A tiny FLUX.1 pipeline folder trains through a real worker, its trees land in the database
with node images (what the tree inspector shows), and a branch job regrows from one of its nodes.

Filesystem transport only: the FLUX code path is the same on both, and the Redis stack is covered
by the digits tests.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from worker_stack import Stack, make_stack

from backend import crud
from backend.db import session_scope

sys.path.insert(0, str(Path(__file__).parents[1] / "core" / "models"))
from tiny_diffusers import save_flux


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with make_stack("filesystem", tmp_path_factory.mktemp("stack-flux")) as made:
        yield made


def flux_run(folder: Path) -> dict[str, Any]:
    return {
        "model": str(folder),
        "device": "cpu",
        "reward": "brightness",
        "prompts": ["a red cat", "a blue dog"],
        "eval_prompts": ["green grass"],
        "prompts_per_epoch": 2,
        "epochs": 2,
        "sampling.steps": 4,
        "sampling.height": 8,
        "sampling.width": 8,
        "tree.k": 2,
        "tree.depth": 2,
        "train.lora_rank": 2,
        "log_tree_every": 1,
        "sample_every": 1,
        "checkpoint_every": 1,
    }


def test_flux_train_job_logs_trees_and_branches(stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "tiny-flux"
    save_flux(folder)
    overrides = flux_run(folder)
    stack.start_worker("flux")
    try:
        job_id = stack.submit("train", preset="tiny-treegrpo", overrides=overrides)
        job = stack.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=240)
        assert job["status"] == "succeeded", stack.explain(job_id)()
        with session_scope(stack.url) as session:
            trees, count = crud.list_trees(session, job_id=job_id)
            assert count == 2 * 2  # 2 epochs x 2 prompts
            tree = crud.get_tree(session, tree_id=trees[0]["tree"].id)
            assert trees[0]["leaves"] == 4
            for node in tree.nodes:
                assert node.image_path and (stack.store / node.image_path).is_file()
            leaves = [n for n in tree.nodes if n.is_leaf]
            assert all(n.reward is not None and n.advantage is not None for n in leaves)
            node = next(n for n in tree.nodes if 0 < n.step_index < tree.steps)
            tree_id, node_id = tree.id, node.id
        params = {"branch": {"tree_id": tree_id, "node_id": node_id, "k": 2}}
        branch = stack.submit("sample", preset="tiny-treegrpo", overrides=overrides, params=params)
        done = stack.wait_status(branch, ("succeeded", "failed", "cancelled"), timeout=120)
        assert done["status"] == "succeeded", stack.explain(branch)()
        with session_scope(stack.url) as session:
            (record, status), *_ = crud.list_branches(session, tree_id=tree_id)
            assert (record.job_id, record.node_id, status) == (branch, node_id, "succeeded")
            children = [n for n in record.nodes if n.parent_id is None]
            assert len(children) == 2
            leaves = [n for n in record.nodes if n.is_leaf]
            assert len(leaves) == 2 and all(n.reward is not None for n in leaves)
    finally:
        stack.stop_workers()
