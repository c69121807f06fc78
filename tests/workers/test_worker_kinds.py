"""The child's side of every job kind, in process, on SQLite and the tiny random model.

What a worker's child process does with a claimed job (workers/kinds.py): train (with resume
through the database), sample trees from a checkpoint, evaluate a checkpoint with several
rewards, branch from a stored node; and the readable refusals.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from worker_db import claim, local_settings, new_job, points, row

from backend import crud
from backend.db import session_scope
from backend.settings import Settings
from backend.storage import log_relpath
from treegrpo.config import RunConfig
from workers.context import JobContext, LostOwnership, StopRequest
from workers.joblog import JobLog
from workers.kinds import JobError, run_job

TRAIN = {"epochs": 3, "sampling.steps": 4, "sample_every": 1, "log_tree_every": 2}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    with local_settings(tmp_path, monkeypatch) as made:
        yield made


class StopAtCheckpoint(StopRequest):
    """Asks for a stop once a given checkpoint exists."""

    def __init__(self, marker: Path) -> None:
        super().__init__(None)
        self.marker = marker

    def requested(self) -> bool:
        return self.marker.exists()


def context(settings: Settings, job_id: int, stop: StopRequest | None = None) -> JobContext:
    data = row(job_id)
    store = settings.resolved_artifact_dir
    return JobContext(
        job_id=job_id,
        attempt=data["attempt"],
        kind=data["kind"],
        config=RunConfig.from_dict(data["config"]),
        params=dict(data["params"]),
        checkpoint_path=data["checkpoint_path"],
        store=store,
        log=JobLog(store / log_relpath(job_id), "job"),
        stop=stop or StopRequest(None),
    )


def finish(job_id: int, status: str) -> None:
    with session_scope() as session:
        assert crud.finish_job(
            session, job_id=job_id, attempt=row(job_id)["attempt"], status=status
        )


def series(job_id: int, name: str) -> list[tuple[int, float]]:
    return [(step, value) for step, n, value in points(job_id) if n == name]


def test_train_resumes_through_the_database_exactly(settings: Settings) -> None:
    store = settings.resolved_artifact_dir
    straight = new_job(overrides=TRAIN)
    claim(straight)
    assert run_job(context(settings, straight)) == "completed"

    split = new_job(overrides=TRAIN)
    claim(split)
    marker = store / f"jobs/{split}/checkpoints/epoch-000001/state.json"
    assert run_job(context(settings, split, StopAtCheckpoint(marker))) == "stopped"
    assert row(split)["checkpoint_path"] == f"jobs/{split}/checkpoints/epoch-000001"
    # A point past the checkpoint, as a crashed attempt may leave behind.
    with session_scope() as session:
        crud.upsert_metrics(session, job_id=split, step=2, values={"loss": 123.0, "stray": 1.0})
    finish(split, "interrupted")
    with session_scope() as session:
        crud.request_resume(session, job_id=split)
    assert claim(split) == 2
    assert run_job(context(settings, split)) == "completed"

    assert sorted({step for step, _, _ in points(split)}) == [0, 1, 2, 3]
    assert "stray" not in {name for _, name, _ in points(split)}
    for name in ("reward_mean", "loss", "images_seen", "images_per_epoch", "eval/brightness_mean"):
        assert series(split, name) == series(straight, name), name
    log = (store / log_relpath(split)).read_text()
    assert "resumed from" in log and "dropped 2 metric points after epoch 1" in log
    with session_scope() as session:
        assert crud.sample_epochs(session, job_id=split) == [0, 1, 2, 3]
        # Trees of epochs 1 (the base policy's), 2 (every 2nd, beside its gallery) and 3 (the
        # last), one per prompt.
        trees = [t["tree"].epoch for t in crud.list_trees(session, job_id=split)[0]]
        assert trees == [1, 1, 2, 2, 3, 3]


def test_sample_evaluate_and_branch_from_a_checkpoint(settings: Settings) -> None:
    store = settings.resolved_artifact_dir
    source = new_job(overrides=TRAIN)
    claim(source)
    run_job(context(settings, source))

    sample = new_job("sample", overrides=TRAIN, params={"source_job_id": source, "trees": 3})
    claim(sample)
    assert run_job(context(settings, sample)) == "completed"
    with session_scope() as session:
        trees, count = crud.list_trees(session, job_id=sample)
        assert count == 3
        first = trees[0]["tree"]
        assert (first.epoch, first.meta["policy"]) == (3, {"job_id": source, "epoch": 3})
        assert len({t["tree"].prompt for t in trees}) == 3
        tree = crud.get_tree(session, tree_id=first.id)
        # Latents only where a branch can start (not at leaves: nothing left to regrow).
        assert all((store / str(n.latent_path)).is_file() for n in tree.nodes if not n.is_leaf)
        assert all(n.latent_path is None for n in tree.nodes if n.is_leaf)
        # The atlas the inspector draws from: one tile per drawn node (issue 28).
        atlas = json.loads((store / str(tree.artifact_dir) / "atlas.json").read_text())
        assert (store / str(tree.artifact_dir) / atlas["image"]).is_file()
        assert 0 < len(atlas["slots"]) <= len(tree.nodes)
        node = next(n for n in tree.nodes if n.step_index == 1)
        leaf = next(n for n in tree.nodes if n.is_leaf)
        tree_id, node_id, leaf_id, steps = tree.id, node.id, leaf.id, tree.steps
    assert "reward_mean" in {name for _, name, _ in points(sample)}

    evaluate = new_job(
        "evaluate",
        overrides={**TRAIN, "reward": {"brightness": 1.0, "contrast": 2.0}},
        params={"source_job_id": source, "checkpoint_epoch": 1, "samples_per_prompt": 2},
    )
    claim(evaluate)
    assert run_job(context(settings, evaluate)) == "completed"
    values = {name: value for step, name, value in points(evaluate) if step == 1}
    assert values["eval/reward_mean"] == pytest.approx(
        values["eval/brightness_mean"] + 2.0 * values["eval/contrast_mean"]
    )
    with session_scope() as session:
        samples, total = crud.list_samples(session, job_id=evaluate)
        assert total == 2 * 2  # the tiny preset's 2 held-out prompts, 2 samples each
        assert samples[0].reward == pytest.approx(
            samples[0].rewards["brightness"] + 2.0 * samples[0].rewards["contrast"]
        )

    branch = new_job(
        "sample",
        overrides=TRAIN,
        params={"branch": {"tree_id": tree_id, "node_id": node_id, "k": 2}},
    )
    claim(branch)
    assert run_job(context(settings, branch)) == "completed"
    assert run_job(context(settings, branch)) == "completed"  # again: replaces, never doubles
    with session_scope() as session:
        assert not any(n.branch_job_id for n in crud.get_tree(session, tree_id=tree_id).nodes)
        ((record, _),) = crud.list_branches(session, tree_id=tree_id)
        grown = list(record.nodes)
        assert record.job_id == branch and record.node_id == node_id
        assert len(grown) == 2 * (steps - 1)
        assert sorted(n.step_index for n in grown if n.parent_id is None) == [2, 2]
        assert all(n.advantage is not None for n in grown if n.is_leaf)
        # A branch writes its own atlas, a tile for each node it grew.
        folder = (store / str(grown[0].image_path)).parent.parent
        assert len(json.loads((folder / "atlas.json").read_text())["slots"]) == len(grown)
        # The branch says which policy grew it (the page shows it, not only the job log).
        assert record.policy == {
            "job_id": source,
            "epoch": 3,
            "checkpoint": True,
            "tree_epoch": 3,
            "text": f"job {source}'s checkpoint of epoch 3",
        }
    log = (store / log_relpath(branch)).read_text()
    assert f"with job {source}'s checkpoint of epoch 3" in log

    refusals: list[tuple[dict[str, Any], str]] = [
        ({"branch": {"tree_id": tree_id, "node_id": leaf_id, "k": 2}}, "is a leaf"),
        ({"source_job_id": source, "checkpoint_epoch": 7}, "no checkpoint of epoch 7 .*1, 2, 3"),
        ({"source_job_id": 999}, "job 999 does not exist"),
    ]
    # Retention (the sample job's 3 trees, its newest kept): the older trees' nodes refuse.
    with session_scope() as session:
        assert crud.drop_old_tree_latents(session, job_id=sample, keep=1)
        older = crud.get_tree(session, tree_id=first.id)
        assert older.latents_dropped_at is not None
        dropped_node = next(n.id for n in older.nodes if n.step_index == 1)
    refusals.append(
        (
            {"branch": {"tree_id": first.id, "node_id": dropped_node, "k": 2}},
            "has no stored latent: this tree's latents were dropped by retention",
        )
    )
    for params, message in refusals:
        job_id = new_job("sample", overrides=TRAIN, params=params)
        claim(job_id)
        with pytest.raises(JobError, match=message):
            run_job(context(settings, job_id))


def test_a_process_that_lost_its_job_writes_nothing(settings: Settings) -> None:
    job_id = new_job(overrides=TRAIN)
    claim(job_id)
    ctx = context(settings, job_id)
    # The reconciler declared it lost, and another worker claimed it again.
    with session_scope() as session:
        crud.mark_stale_lost(session, stale_before=crud.stale_cutoff(-60))
        crud.request_resume(session, job_id=job_id)
    claim(job_id)
    with pytest.raises(LostOwnership):
        run_job(ctx)
    assert points(job_id) == []


def test_an_invalid_stored_config_names_the_setting(settings: Settings) -> None:
    from workers.runner import describe

    job_id = new_job(overrides=TRAIN)
    with session_scope() as session:
        job = crud.get_job(session, job_id=job_id)
        job.config = {**job.config, "tree": {**job.config["tree"], "k": 1}}
    with pytest.raises(Exception) as caught:
        RunConfig.from_dict(row(job_id)["config"])
    assert describe(caught.value) == "invalid setting tree.k: must be >= 2, got 1"
    long = describe(RuntimeError("x" * 5000))
    assert len(long) == 2000 and long.startswith("RuntimeError: xxx") and long.endswith("...")
