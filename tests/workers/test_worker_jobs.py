"""Real workers run real jobs on the shipped digits model, on both transports.

One test per transport, because its steps build on each other (and pytest-xdist may split a
module's tests between processes, which would train the job twice): a small train job (3 epochs,
2 prompts, trees of k=2, d=2 over 4 steps, trees and galleries every epoch) must succeed with
its metrics, trees (node images and latents on disk) and galleries in the database; duplicate
deliveries of its message must not start a second run; and a branch job on one of its logged
nodes must grow k children of that node.
"""

from __future__ import annotations

from typing import Any

from worker_stack import DIGITS_SMALL, Stack, wait_until

from backend import crud
from backend.db import session_scope
from treegrpo.atlas import drawable


def test_digits_train_job_duplicates_and_branch(stack: Stack) -> None:
    # Two workers on one queue: a duplicate message reaches the second while the first runs.
    stack.start_worker("a")
    stack.start_worker("b")
    try:
        trained = train(stack)
        check_trained_job(stack, trained)
        check_duplicates_were_ignored(stack, trained["job_id"])
        check_branch(stack, trained["job_id"])
    finally:
        stack.stop_workers()


def train(stack: Stack) -> dict[str, Any]:
    job_id = stack.create_job("train", overrides=DIGITS_SMALL)
    seen = [stack.job(job_id)["status"]]
    stack.send(job_id)
    stack.send(job_id)  # the same task delivered twice
    running = stack.wait_status(job_id, ("running", "succeeded", "failed"))
    seen.append(running["status"])
    stack.send(job_id)  # and once more while it runs
    final = stack.wait_status(job_id, ("succeeded", "failed", "cancelled"), timeout=150)
    seen.append(final["status"])
    return {"job_id": job_id, "seen": seen, "final": final}


def check_trained_job(stack: Stack, trained: dict[str, Any]) -> None:
    job_id = trained["job_id"]
    job = trained["final"]
    assert trained["seen"] == ["queued", "running", "succeeded"], stack.explain(job_id)()
    assert job["error"] is None
    assert job["progress_step"] == job["progress_total"] == 3
    assert job["started_at"] <= job["finished_at"]

    points = stack.metric_points(job_id)
    steps = sorted({step for step, _, _ in points})
    assert steps == [0, 1, 2, 3]
    names = {name for step, name, _ in points if step == 3}
    for name in (
        "reward_mean",
        "reward/digit_judge_mean",
        "reward/digit_judge_std",
        "loss",
        "clip_fraction",
        "approx_kl",
        "ratio_mean",
        "advantage/depth0_mean",
        "advantage/depth2_std",
        "images_seen",
        "images_per_epoch",
        "model_evals",
        "model_evals_per_epoch",
        "wall_clock",
        "eval/digit_judge_mean",
    ):
        assert name in names, name
    # Epoch 0 is the baseline gallery before any update.
    assert {name for step, name, _ in points if step == 0} == {
        "eval/digit_judge_mean",
        "eval/reward_mean",
        "watch/diversity",
    }
    # The over-optimisation watch at every gallery epoch after it.
    assert {"watch/reward_gap", "watch/diversity"} <= {n for s, n, _ in points if s == 1}
    assert "watch/overopt" in {name for step, name, _ in points if step == 2}
    per_epoch = {name: value for step, name, value in points if step == 2}
    assert per_epoch["images_per_epoch"] == 2 * 4  # 2 prompts x k^d leaves

    with session_scope(stack.url) as session:
        trees, count = crud.list_trees(session, job_id=job_id)
        assert count == 3 * 2  # every epoch, one tree per prompt
        tree = crud.get_tree(session, tree_id=trees[0]["tree"].id)
        assert tree.nodes and trees[0]["leaves"] == 4
        shown = drawable((n.id, n.parent_id, n.log_prob_old is not None) for n in tree.nodes)
        for node in tree.nodes:
            assert node.image_path and (stack.store / node.image_path).is_file()
            # A latent where a branch can start (drawn, treegrpo/atlas.py); none at a leaf (no
            # step left to regrow) or an ODE-chain state (never drawn).
            if node.id in shown and not node.is_leaf:
                assert node.latent_path and (stack.store / node.latent_path).is_file()
            else:
                assert node.latent_path is None
        leaves = [n for n in tree.nodes if n.is_leaf]
        assert all(n.reward is not None and n.advantage is not None for n in leaves)
        assert any(n.log_prob_old is not None for n in tree.nodes)
        samples, total = crud.list_samples(session, job_id=job_id)
        assert crud.sample_epochs(session, job_id=job_id) == [0, 1, 2, 3]
        assert total == 4 * 32  # 2 held-out prompts cycled to a 32-image gallery per epoch
        assert all((stack.store / s.image_path).is_file() for s in samples)
        assert samples[0].rewards and "digit_judge" in samples[0].rewards

    log = stack.log(job_id)
    assert "epoch 3/3" in log and "job succeeded" in log


def check_duplicates_were_ignored(stack: Stack, job_id: int) -> None:
    assert stack.job(job_id)["attempt"] == 1
    assert stack.log(job_id).count("claimed by") == 1
    # A copy that arrives while the job runs waits out the lease (the job's worker might die,
    # and then the copy takes over); back after the job ended, it is ignored.
    outputs = lambda: "\n".join(w.text() for w in stack.workers)  # noqa: E731
    assert f"job {job_id} is held by a live worker" in outputs(), stack.explain(job_id)()
    ignored = f"job {job_id} is not queued (running, finished or unknown): message ignored"
    wait_until(
        lambda: outputs().count(ignored) == 2,
        30,
        "both copies to be ignored",
        stack.explain(job_id),
    )
    assert stack.job(job_id)["attempt"] == 1


def check_branch(stack: Stack, trained_job: int) -> None:
    with session_scope(stack.url) as session:
        trees, _ = crud.list_trees(session, job_id=trained_job, epoch=2)
        tree = crud.get_tree(session, tree_id=trees[0]["tree"].id)
        # A node in the middle of the tree: not the root, not a leaf.
        node = next(n for n in tree.nodes if 0 < n.step_index < tree.steps)
        tree_id, node_id, before = tree.id, node.id, len(tree.nodes)
        node_step = node.step_index
    params = {"branch": {"tree_id": tree_id, "node_id": node_id, "k": 3}}
    job_id = stack.submit("sample", overrides=DIGITS_SMALL, params=params)
    job = stack.wait_status(job_id, ("succeeded", "failed", "cancelled"))
    assert job["status"] == "succeeded", stack.explain(job_id)()

    with session_scope(stack.url) as session:
        tree = crud.get_tree(session, tree_id=tree_id)
        # Beside the training tree, never in it.
        assert len(tree.nodes) == before
        (branch, status), *_ = crud.list_branches(session, tree_id=tree_id)
        assert branch.job_id == job_id and branch.node_id == node_id and status == "succeeded"
        grown = list(branch.nodes)
        children = [n for n in grown if n.parent_id is None]
        assert len(children) == 3
        assert all(c.step_index == node_step + 1 and c.log_prob_old is not None for c in children)
        # Each child continues with ODE steps to a scored leaf of its own.
        leaves = [n for n in grown if n.is_leaf]
        assert len(leaves) == 3 and all(n.reward is not None for n in leaves)
        assert len(grown) == 3 * (tree.steps - node_step)
        for n in grown:
            assert (stack.store / str(n.image_path)).is_file()
        # Latents where a branch can start again: each child (drawn by an SDE step); none at a
        # leaf or along the ODE tails (never drawn in the inspector).
        assert all((stack.store / str(c.latent_path)).is_file() for c in children)
        assert all(n.latent_path is None for n in grown if n.is_leaf)
    names = {name for _, name, _ in stack.metric_points(job_id)}
    assert "reward/digit_judge_mean" in names
