"""A train job with gpus = 2 runs on two ranks (gloo on the CPU here) under a real worker,
replicated or sharded (FSDP2, rank 1 loading no weights, DCP checkpoints).

The worker's child relaunches itself under the core's launcher; rank 0 writes the metrics,
trees and checkpoints, and the result. One transport is enough: the broker plays no part.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_stack import TINY, Stack, make_stack

from backend import crud
from backend.db import session_scope


@pytest.fixture
def local_stack(tmp_path: Path) -> Iterator[Stack]:
    with make_stack("filesystem", tmp_path) as made:
        yield made


@pytest.mark.parametrize("sharding", ["none", "fsdp"])
def test_a_two_process_train_job(local_stack: Stack, sharding: str) -> None:
    stack = local_stack
    stack.start_worker("ranks")
    overrides = {
        **TINY,
        "gpus": 2,
        "epochs": 2,
        "sample_every": 1,
        "log_tree_every": 1,
        "train.sharding": sharding,
    }
    job_id = stack.submit("train", preset="tiny-treegrpo", overrides=overrides)
    job = stack.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=120)
    assert job["status"] == "succeeded", stack.explain(job_id)()
    points = stack.metric_points(job_id)
    assert sorted({step for step, _, _ in points}) == [0, 1, 2]
    seen = {step: value for step, name, value in points if name == "images_seen"}
    assert seen == {1: 8.0, 2: 16.0}  # both ranks' trees counted: 2 prompts x 4 leaves
    with session_scope(stack.url) as session:
        assert crud.list_trees(session, job_id=job_id)[1] >= 2
    assert job["checkpoint_path"].endswith("epoch-000002")
    assert "loading model tiny-random on 2 processes" in stack.log(job_id)
    names = {name for _, name, _ in points}
    assert ("sharding/padding_forwards" in names) == (sharding == "fsdp")
