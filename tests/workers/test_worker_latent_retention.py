"""Bounded latent storage (issue 28): each job keeps the latents of its N newest logged trees
only (TREEGRPO_KEEP_TREE_LATENTS), enforced by the worker as it logs a tree, in a folder store
and in a bucket (moto's S3 server) alike; images, atlas and tree.json stay, the rows say the
tree can no longer be branched. TREEGRPO_LATENT_DTYPE=bfloat16 halves the stored latents."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from moto_s3 import AWS_ENV, make_bucket, moto_server
from worker_db import claim, local_settings, new_job, row

from backend import crud
from backend.db import session_scope
from backend.s3_store import S3Store
from backend.schemas import tree_public
from backend.settings import Settings
from backend.storage import log_relpath, trees_relpath
from treegrpo.branch import load_latent
from treegrpo.config import RunConfig
from treegrpo.tree_record import TreeNodeRecord, TreeRecord
from workers.context import JobContext, StopRequest
from workers.joblog import JobLog
from workers.mirror import Mirror
from workers.recorder import store_tree

LATENT = (4, 8, 8)


def record(seed: int) -> TreeRecord:
    """root 0 -> two SDE children 1, 2 -> one ODE leaf each (3, 4): nodes 0-2 are branch
    points (they keep a latent), the leaves do not."""
    generator = torch.Generator().manual_seed(seed)

    def node(i: int, parent: int | None, step: int, log_prob: float | None) -> TreeNodeRecord:
        return TreeNodeRecord(
            id=i,
            parent_id=parent,
            step_index=step,
            depth=min(step, 1),
            t=1.0 - step / 2,
            sigma=1.0 - step / 2,
            is_leaf=step == 2,
            log_prob=log_prob,
            reward=0.5 if step == 2 else None,
            advantage=None,
            image=torch.rand(3, 16, 16, generator=generator),
            latent=torch.randn(LATENT, generator=generator),
        )

    nodes = [node(0, None, 0, None), node(1, 0, 1, -1.0), node(2, 0, 1, -2.0)]
    nodes += [node(3, 1, 2, None), node(4, 2, 2, None)]
    return TreeRecord(0, "a red square", 2, 1, 2, 0, "mean", nodes)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    with local_settings(tmp_path, monkeypatch) as made:
        yield made


def context(settings: Settings, job_id: int, mirror: Mirror | None, **policy: object) -> JobContext:
    data = row(job_id)
    store = settings.resolved_artifact_dir
    return JobContext(
        job_id=job_id,
        attempt=data["attempt"],
        kind="train",
        config=RunConfig.from_dict(data["config"]),
        params={},
        checkpoint_path=None,
        store=store,
        log=JobLog(store / log_relpath(job_id), "job"),
        stop=StopRequest(None),
        mirror=mirror,
        **policy,  # type: ignore[arg-type]
    )


def trees_of(job_id: int) -> list[dict[str, object]]:
    with session_scope() as session:
        found = []
        for item in crud.list_trees(session, job_id=job_id, limit=100)[0]:
            tree = crud.get_tree(session, tree_id=item["tree"].id)
            found.append(tree_public(tree).model_dump())
        return sorted(found, key=lambda t: int(t["epoch"]))  # type: ignore[call-overload]


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_logging_a_tree_drops_the_latents_of_trees_past_the_newest_n(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    with moto_server(tmp_path) if where == "bucket" else nullcontext() as endpoint:
        bucket = None
        if endpoint is not None:
            for name, value in AWS_ENV.items():
                monkeypatch.setenv(name, value)
            bucket = S3Store(f"s3://{make_bucket(endpoint)}/studio", endpoint)
        mirror = Mirror(bucket, settings.resolved_artifact_dir) if bucket else None
        other = new_job()  # another job's trees are never its retention's business
        claim(other)
        store_tree(context(settings, other, None, keep_tree_latents=1), 1, record(99), 0, {})
        job_id = new_job()
        claim(job_id)
        ctx = context(settings, job_id, mirror, keep_tree_latents=2)
        for epoch in (1, 2, 3, 4):
            store_tree(ctx, epoch, record(epoch), 0, {})

        def files(prefix: str) -> list[str]:
            if bucket is not None:
                return bucket.keys(prefix)
            folder = settings.resolved_artifact_dir / prefix
            return [p.name for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []

        trees = trees_of(job_id)
        assert [t["epoch"] for t in trees] == [1, 2, 3, 4]
        for tree in trees:
            folder = trees_relpath(job_id, int(tree["epoch"]), 0)  # type: ignore[call-overload]
            assert folder in str(tree["nodes"][0]["image_url"])  # type: ignore[index]
            nodes = tree["nodes"]
            old = int(tree["epoch"]) <= 2  # type: ignore[call-overload]
            assert (tree["latents_dropped_at"] is not None) is old
            # Images, atlas and tree.json stay either way.
            assert len([f for f in files(f"{folder}/images")]) == 5
            assert any("atlas" in f for f in files(folder))
            assert any(f.endswith("tree.json") for f in files(folder))
            latents = files(f"{folder}/latents")
            refusals = [n["branch_refusal"] for n in nodes]  # type: ignore[union-attr]
            if old:
                assert latents == []
                assert not (settings.resolved_artifact_dir / folder / "latents").exists()
                assert all("dropped by retention" in str(r) for r in refusals[:3]), refusals
                assert not any(n["branchable"] for n in nodes)  # type: ignore[union-attr]
            else:
                assert len(latents) == 3
                assert refusals[:3] == [None, None, None]
                assert "is a leaf" in str(refusals[3])
        with session_scope() as session:  # the other job's one tree kept its latents
            kept = crud.list_trees(session, job_id=other, limit=10)[0][0]["tree"]
            assert kept.latents_dropped_at is None
        log = (settings.resolved_artifact_dir / log_relpath(job_id)).read_text()
        assert "retention: deleted 3 latent file(s)" in log


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_the_reconciler_sweeps_jobs_over_a_limit_set_after_they_logged(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Retention ran only as a job logged a tree: an operator who set (or lowered) the limit on
    a studio of finished runs kept every old latent. Every worker's reconciler now sweeps the
    jobs over it (found in one query), and a second sweep finds nothing to do."""
    from workers.reconcile import reconcile
    from workers.retention import sweep_tree_latents

    with moto_server(tmp_path) if where == "bucket" else nullcontext() as endpoint:
        bucket = None
        swept = settings.model_copy(update={"keep_tree_latents": 1})
        if endpoint is not None:
            for name, value in AWS_ENV.items():
                monkeypatch.setenv(name, value)
            name = make_bucket(endpoint)
            bucket = S3Store(f"s3://{name}/studio", endpoint)
            swept = swept.model_copy(
                update={"artifact_url": f"s3://{name}/studio", "s3_endpoint_url": endpoint}
            )
        mirror = Mirror(bucket, settings.resolved_artifact_dir) if bucket else None
        jobs = []
        for _ in range(2):  # logged with no limit: every tree keeps its latents
            job_id = new_job()
            claim(job_id)
            for epoch in (1, 2, 3):
                store_tree(context(settings, job_id, mirror), epoch, record(epoch), 0, {})
            jobs.append(job_id)
        small = new_job()  # one tree: within any limit
        claim(small)
        store_tree(context(settings, small, mirror), 1, record(7), 0, {})
        gone = new_job()  # a deleted run is the purge's business, not retention's
        attempt = claim(gone)
        for epoch in (1, 2):
            store_tree(context(settings, gone, mirror), epoch, record(epoch), 0, {})
        with session_scope() as session:
            crud.finish_job(session, job_id=gone, attempt=attempt, status="succeeded")
            crud.soft_delete_job(session, job_id=gone)

        def latents(job_id: int, epoch: int) -> int:
            folder = f"{trees_relpath(job_id, epoch, 0)}/latents"
            if bucket is not None:
                return len(bucket.keys(folder))
            found = settings.resolved_artifact_dir / folder
            return len(list(found.iterdir())) if found.is_dir() else 0

        assert [latents(j, e) for j in jobs for e in (1, 2, 3)] == [3] * 6
        assert sweep_tree_latents(settings) == []  # no limit set: nothing happens
        actions = reconcile(swept, lambda *_: None)
        assert actions == [
            (job_id, "retention: 6 latent file(s) of older trees deleted") for job_id in jobs
        ]
        for job_id in jobs:
            assert [latents(job_id, e) for e in (1, 2, 3)] == [0, 0, 3]
            dropped = [t["latents_dropped_at"] is not None for t in trees_of(job_id)]
            assert dropped == [True, True, False]
            log = (settings.resolved_artifact_dir / log_relpath(job_id)).read_text()
            assert "retention: deleted 6 latent file(s)" in log
        assert latents(small, 1) == 3 and [latents(gone, e) for e in (1, 2)] == [3, 3]
        assert sweep_tree_latents(swept) == []  # within the limit now: the query finds none


def test_bfloat16_latents_take_half_the_bytes_and_load_as_float32(
    settings: Settings,
) -> None:
    sizes = {}
    stored = record(5)
    for dtype in ("float32", "bfloat16"):
        job_id = new_job()
        claim(job_id)
        store_tree(context(settings, job_id, None, latent_dtype=dtype), 1, stored, 0, {})
        with session_scope() as session:
            tree = crud.list_trees(session, job_id=job_id, limit=10)[0][0]["tree"]
            path = crud.get_tree(session, tree_id=tree.id).nodes[1].latent_path
        file = settings.resolved_artifact_dir / str(path)
        sizes[dtype] = file.stat().st_size
        loaded = load_latent(file)
        assert loaded.dtype == torch.float32
        original = stored.nodes[1].latent
        assert original is not None
        if dtype == "float32":
            assert torch.equal(loaded, original)
        else:
            assert torch.equal(loaded, original.to(torch.bfloat16).float())
            assert not torch.equal(loaded, original)
            # bfloat16 keeps 8 significant bits: a relative error of at most 2^-8.
            assert torch.allclose(loaded, original, rtol=2**-8, atol=0)
    # 256 values: 1,024 bytes against 512, plus the same small header.
    assert sizes["float32"] - sizes["bfloat16"] == 4 * 8 * 8 * 2


def test_a_training_job_follows_the_operators_latent_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's child reads both settings from the environment (workers/runner.py): a tiny
    TreeGRPO run logging 6 trees keeps bfloat16 latents for its 2 newest only."""
    from safetensors import safe_open

    from workers.runner import run

    values = {"keep_tree_latents": 2, "latent_dtype": "bfloat16"}
    with local_settings(tmp_path, monkeypatch, **values) as settings:
        job_id = new_job(overrides={"epochs": 3, "sampling.steps": 4, "log_tree_every": 2})
        attempt = claim(job_id)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert run(job_id, attempt, StopRequest(None), {}) == "completed"
        finally:
            torch.set_num_threads(threads)
        trees = trees_of(job_id)
        assert len(trees) == 6  # epochs 1, 2 and 3, two prompts each
        kept = [t for t in trees if t["latents_dropped_at"] is None]
        assert [(t["epoch"], t["index"]) for t in kept] == [(3, 0), (3, 1)]
        with session_scope() as session:
            tree = crud.get_tree(session, tree_id=int(kept[0]["id"]))  # type: ignore[call-overload]
            paths = [n.latent_path for n in tree.nodes if n.latent_path]
        assert paths
        with safe_open(str(settings.resolved_artifact_dir / paths[0]), "pt") as stored:
            assert stored.get_tensor("latent").dtype == torch.bfloat16
        store = settings.resolved_artifact_dir
        stale = [t for t in trees if t["latents_dropped_at"] is not None]
        for tree in stale:
            folder = trees_relpath(job_id, int(tree["epoch"]), int(tree["index"]))  # type: ignore[call-overload]
            assert not (store / folder / "latents").exists()
            assert (store / folder / "tree.json").is_file()


@pytest.mark.parametrize(
    ("variable", "value"),
    [("TREEGRPO_LATENT_DTYPE", "float16"), ("TREEGRPO_KEEP_TREE_LATENTS", "-1")],
)
def test_a_bad_latent_setting_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    from backend.settings import load_settings
    from treegrpo.config import ConfigError

    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings()
