"""The interactive lane: a branch job on its own worker shows its children within the target
(< 10 s on the digits model) while a training job runs on the training worker; and the purge
task removes a deleted job's artifacts.

Real `treegrpo worker` processes on the filesystem transport: one consumes the stack's training
queue, the other its interactive queue, as `make up` and compose run them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_stack import DIGITS_SMALL, Stack, make_stack, wait_until

from backend import crud
from backend.db import session_scope
from backend.queue import TASK_PURGE
from backend.storage import job_dir

BRANCH_TARGET_S = 10.0


@pytest.fixture(scope="module")
def lanes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with make_stack("filesystem", tmp_path_factory.mktemp("lanes")) as stack:
        stack.start_worker("training")
        stack.start_worker("interactive", queues=f"{stack.queue}-interactive")
        yield stack


def _branch_children(stack: Stack, job_id: int) -> int:
    with session_scope(stack.url) as session:
        branch = crud.branch_of_job(session, job_id=job_id)
        return len(branch.nodes) if branch is not None else 0


def test_a_branch_is_served_while_training_runs(lanes: Stack) -> None:
    stack = lanes
    # A short run logs a tree (and a checkpoint) to branch from.
    trained = stack.submit("train", overrides={**DIGITS_SMALL, "epochs": 1})
    done = stack.wait_status(trained, ("succeeded", "failed", "cancelled"), timeout=180)
    assert done["status"] == "succeeded", stack.explain(trained)()
    with session_scope(stack.url) as session:
        items, _ = crud.list_trees(session, job_id=trained)
        tree = crud.get_tree(session, tree_id=items[0]["tree"].id)
        node = next(n for n in tree.nodes if 0 < n.step_index < tree.steps)
        tree_id, node_id, training_nodes = tree.id, node.id, len(tree.nodes)
    # A long training job holds the training worker.
    long_run = stack.submit("train", overrides={**DIGITS_SMALL, "epochs": 200})
    stack.wait_for(long_run, lambda job: job["progress_step"] >= 1, "the long run's first epoch")

    params = {"branch": {"tree_id": tree_id, "node_id": node_id, "k": 3}}
    branch = stack.create_job("sample", overrides=DIGITS_SMALL, params=params)
    started = time.monotonic()
    stack.send(branch, "sample", params, queue=f"{stack.queue}-interactive")
    wait_until(
        lambda: _branch_children(stack, branch) > 0,
        60,
        "the branch's children",
        stack.explain(branch),
    )
    seconds = time.monotonic() - started
    assert stack.job(long_run)["status"] == "running"  # it never waited for the training job
    assert seconds < BRANCH_TARGET_S, f"branch took {seconds:.1f} s\n{stack.explain(branch)()}"
    print(f"branch on the interactive lane while training runs: {seconds:.1f} s")
    with session_scope(stack.url) as session:
        assert len(crud.get_tree(session, tree_id=tree_id).nodes) == training_nodes

    with session_scope(stack.url) as session:
        crud.request_cancel(session, job_id=long_run)
    stack.wait_status(long_run, ("cancelled", "failed", "succeeded"), timeout=120)


def test_the_purge_task_removes_a_deleted_job_s_artifacts(lanes: Stack) -> None:
    stack = lanes
    job_id = stack.create_job("train", overrides=DIGITS_SMALL)
    folder: Path = stack.store / job_dir(job_id)
    (folder / "samples").mkdir(parents=True)
    (folder / "samples" / "000.png").write_bytes(b"x")
    keep = stack.create_job("train", overrides=DIGITS_SMALL)
    (stack.store / job_dir(keep)).mkdir(parents=True)
    with session_scope(stack.url) as session:
        crud.request_cancel(session, job_id=job_id)
        crud.request_cancel(session, job_id=keep)
        crud.soft_delete_job(session, job_id=job_id)
    from celery import Celery

    from backend.queue import celery_config

    sender = Celery("purge-test", set_as_current=False)
    sender.conf.update(celery_config(stack.settings))
    with sender.connection_for_write() as connection:
        for target in (keep, job_id):  # a job that is not deleted is left alone
            sender.send_task(
                TASK_PURGE,
                args=[target],
                queue=f"{stack.queue}-interactive",
                connection=connection,
            )
    wait_until(lambda: not folder.exists(), 30, "the purge", lambda: "")
    assert (stack.store / job_dir(keep)).is_dir()
