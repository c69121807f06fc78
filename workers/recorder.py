"""Writing a job's results: metrics, logged trees (PNG thumbnails and node latents), galleries.

Node latents, the bulk of a tree's bytes, follow the operator's policy (backend/settings.py):
kept only at branch points, in TREEGRPO_LATENT_DTYPE, and for each job's
TREEGRPO_KEEP_TREE_LATENTS newest trees (`drop_old_latents`, run each time a tree is logged).

Files go to the artifact store in the layout of backend/storage.py, rows through the backend's
CRUD in short sessions. Every write of a training job first checks that this attempt still owns
the job (JobContext.heartbeat), so a process that lost its job cannot overwrite its successor's
results. `JobRecorder` is the trainer callback built from these pieces.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from backend import crud
from backend.db import session_scope
from backend.storage import samples_relpath, trees_relpath
from treegrpo.artifacts import thumbnail, write_atlas, write_tree
from treegrpo.atlas import drawable
from treegrpo.branch import save_latent
from treegrpo.callbacks import Callback, RunInfo, SampleBatch
from treegrpo.scoring import weighted_sum
from treegrpo.tree_record import TreeNodeRecord, TreeRecord
from workers.context import JobContext, LostOwnership, with_db_retry
from workers.retention import delete_latent_folders, dropped_note

# Metrics shown in the one-line summary of each epoch in the job log.
SUMMARY = ("reward_mean", "loss", "clip_fraction", "approx_kl", "ratio_mean")


def write_metrics(ctx: JobContext, step: int, values: Mapping[str, float]) -> None:
    """One step's points; a point already there (a resumed or repeated step) is replaced."""

    def write() -> None:
        with session_scope() as session:
            crud.upsert_metrics(session, job_id=ctx.job_id, step=step, values=dict(values))

    with_db_retry(write)


def node_row(
    node: TreeNodeRecord, image_path: str | None, latent_path: str | None
) -> dict[str, Any]:
    """A node's row (crud.trees.NODE_FIELDS with its index and its parent's), for a training
    tree and a branch alike: the record's layout, renamed where the table names differ."""
    return {
        "node_index": node.id,
        "parent_index": node.parent_id,
        "depth": node.depth,
        "step_index": node.step_index,
        "t": node.t,
        "sigma": node.sigma,
        "is_leaf": node.is_leaf,
        "log_prob_old": node.log_prob,
        "reward": node.reward,
        "rewards": node.rewards,
        "advantage": node.advantage,
        "image_path": image_path,
        "latent_path": latent_path,
    }


def branch_points(nodes: Sequence[TreeNodeRecord]) -> set[int]:
    """The nodes whose latent is kept: where "branch again" can start from the inspector (a
    drawn node, treegrpo/atlas.py, that is not a leaf: a leaf has no step left, and an ODE-chain
    state is never drawn). A k=4, d=4 tree keeps 342 of its 1,367 latents (90 MB instead of
    358 MB at 512^2 SD3 size, docs/BENCHMARKS.md)."""
    shown = drawable((n.id, n.parent_id, n.log_prob is not None) for n in nodes)
    return {n.id for n in nodes if n.id in shown and not n.is_leaf and n.sigma > 0}


def store_tree(
    ctx: JobContext, epoch: int, record: TreeRecord, seed: int, meta: dict[str, Any]
) -> int:
    """tree.json, images/node-NNNNN.png, the atlas and latents/node-NNNNN.safetensors (of the
    branch points only) under the tree's folder, then the tree row with its nodes. Returns the
    tree's id."""
    rel = trees_relpath(ctx.job_id, epoch, record.index)
    folder = ctx.path(rel)
    shutil.rmtree(folder, ignore_errors=True)  # a tree logged again (after a resume) replaces
    record.meta = {**record.meta, **meta}
    document = write_tree(record, folder)
    branchable = branch_points(record.nodes)
    nodes = []
    for node, entry in zip(record.nodes, document["nodes"], strict=True):
        latent_path = None
        if node.latent is not None and node.id in branchable:
            latent_path = f"{rel}/latents/node-{node.id:05d}.safetensors"
            save_latent(ctx.path(latent_path), node.latent, ctx.latent_dtype)
        image_path = f"{rel}/{entry['image']}" if entry["image"] else None
        nodes.append(node_row(node, image_path, latent_path))

    ctx.publish(rel)  # before the row: the API never names an image the store lacks

    def write() -> int:
        with session_scope() as session:
            return crud.add_tree(
                session,
                job_id=ctx.job_id,
                epoch=epoch,
                index=record.index,
                prompt=record.prompt,
                seed=seed,
                window_start=record.window_start,
                k=record.k,
                depth=record.depth,
                steps=record.steps,
                backup=record.backup,
                nodes=nodes,
                artifact_dir=rel,
                meta=record.meta,
            ).id

    tree_id = with_db_retry(write)
    drop_old_latents(ctx)
    return tree_id


def drop_old_latents(ctx: JobContext) -> int:
    """Retention (TREEGRPO_KEEP_TREE_LATENTS = N > 0, workers/retention.py): the latents of the job's trees older than
    its N newest are deleted from the store (folder or bucket) and the rows say so, rows first:
    from then on no answer offers a branch that would find its latent missing (a crash between
    the two leaves files only a purge removes). Images, atlas, tree.json and the latents of
    branch results (their own jobs' work, a few per branch) stay. Returns the files deleted."""
    if ctx.keep_tree_latents <= 0:
        return 0

    def drop() -> list[str]:
        with session_scope() as session:
            return crud.drop_old_tree_latents(
                session, job_id=ctx.job_id, keep=ctx.keep_tree_latents
            )

    removed = delete_latent_folders(ctx.job_id, with_db_retry(drop), ctx.delete_folder)
    if removed:
        ctx.log.write(dropped_note(removed, ctx.keep_tree_latents))
    return removed


def store_branch_nodes(
    ctx: JobContext, rel: str, branch_id: int, nodes: Sequence[TreeNodeRecord]
) -> None:
    """images/node-NNNNN.png, latents/node-NNNNN.safetensors and atlas.* of a branch's nodes
    under `rel`, then its node rows, beside the training tree and never in it. A branch job that runs again
    (resumed after a failure) replaces its earlier children."""
    rows = []
    branchable = branch_points(nodes)
    for node in nodes:
        image_path = f"{rel}/images/node-{node.id:05d}.png"
        latent_path: str | None = f"{rel}/latents/node-{node.id:05d}.safetensors"
        target = ctx.path(image_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        assert node.image is not None and node.latent is not None
        thumbnail(node.image).save(target)
        if node.id in branchable:
            save_latent(ctx.path(str(latent_path)), node.latent, ctx.latent_dtype)
        else:
            latent_path = None
        rows.append(node_row(node, image_path, latent_path))
    if nodes:
        write_atlas(list(nodes), ctx.path(rel), every=True)  # the branch's own atlas
    ctx.publish(rel)  # before the rows: the API never names an image the store lacks
    ctx.heartbeat()
    with session_scope() as session:
        crud.replace_branch_nodes(session, branch_id=branch_id, nodes=rows)


def store_samples(
    ctx: JobContext,
    epoch: int,
    prompts: Sequence[str],
    images: Tensor,
    rewards: Mapping[str, Tensor],
    weights: Mapping[str, float],
) -> int:
    """A gallery: samples/epoch-NNNNNN/NNN.png and one samples row per image (reward = the
    weighted sum, rewards = every named score)."""
    rel = samples_relpath(ctx.job_id, epoch)
    folder = ctx.path(rel)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    items = []
    for i, prompt in enumerate(prompts):
        name = f"{i:03d}.png"
        thumbnail(images[i]).save(folder / name)
        scores = {reward: float(values[i]) for reward, values in rewards.items()}
        items.append(
            {
                "prompt": prompt,
                "image_path": f"{rel}/{name}",
                "reward": weighted_sum(scores, weights),
                "rewards": scores,
            }
        )
    ctx.publish(rel)

    def write() -> int:
        with session_scope() as session:
            return crud.add_samples(session, job_id=ctx.job_id, epoch=epoch, items=items)

    return with_db_retry(write)


class JobRecorder(Callback):
    """The trainer's callbacks for a worker job: everything it reports goes to the database and
    the artifact store, and the stop request comes from the supervisor."""

    def __init__(self, ctx: JobContext, images_seen: int = 0, model_evals: int = 0) -> None:
        self.ctx = ctx
        self.weights = ctx.config.reward_weights
        self.epochs = ctx.config.epochs
        # Cumulative counters at the previous epoch, to report per-epoch counts.
        self.images_seen = images_seen
        self.model_evals = model_evals
        self.started = time.monotonic()

    def on_start(self, info: RunInfo) -> None:
        self.ctx.heartbeat(progress_step=info.start_epoch, progress_total=info.epochs)
        self.ctx.notes["epoch"] = info.start_epoch + 1
        self.ctx.log.write(
            f"{info.algorithm} on {self.ctx.config.model}: epochs {info.start_epoch + 1}.."
            f"{info.epochs}"
        )

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.ctx.heartbeat(progress_step=epoch, progress_total=self.epochs)
        values = dict(metrics)
        if "images_seen" in values:
            values["images_per_epoch"] = values["images_seen"] - self.images_seen
            values["model_evals_per_epoch"] = values["model_evals"] - self.model_evals
            self.images_seen = int(values["images_seen"])
            self.model_evals = int(values["model_evals"])
        write_metrics(self.ctx, epoch, values)
        self.ctx.notes["epoch"] = epoch + 1
        shown = ", ".join(f"{name} {values[name]:.4g}" for name in SUMMARY if name in values)
        if epoch == 0:
            evals = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if k.startswith("eval/"))
            self.ctx.log.write(f"epoch 0 (baseline gallery): {evals}")
        else:
            seconds = values.get("time/epoch", 0.0)
            self.ctx.log.write(f"epoch {epoch}/{self.epochs}: {shown} ({seconds:.1f} s)")

    def on_tree(self, epoch: int, record: TreeRecord) -> None:
        self.ctx.heartbeat()
        # The trees of epoch E were grown by the policy after E - 1 updates.
        policy = {"job_id": self.ctx.job_id, "epoch": epoch - 1}
        store_tree(self.ctx, epoch, record, self.ctx.config.seed, {"policy": policy})

    def on_samples(self, batch: SampleBatch) -> None:
        self.ctx.heartbeat()
        store_samples(
            self.ctx, batch.epoch, batch.prompts, batch.images, batch.rewards, self.weights
        )

    def on_checkpoint(self, epoch: int, path: Path) -> None:
        # Uploaded whole (marker last) before the row names it: a crash mid-upload leaves the
        # previous checkpoint as the job's latest.
        self.ctx.publish_checkpoint(self.ctx.relative(path))

        def write() -> bool:
            with session_scope() as session:
                return crud.set_checkpoint(
                    session,
                    job_id=self.ctx.job_id,
                    attempt=self.ctx.attempt,
                    path=self.ctx.relative(path),
                )

        owned = with_db_retry(write)
        if not owned:
            raise LostOwnership(f"job {self.ctx.job_id} attempt {self.ctx.attempt} lost the job")
        self.ctx.notes["checkpoint_epoch"] = epoch
        self.ctx.log.write(f"checkpoint of epoch {epoch}: {self.ctx.relative(path)}")

    def on_log(self, message: str) -> None:
        self.ctx.log.write(message)

    def on_end(self, status: str, epoch: int) -> None:
        self.ctx.log.write(f"trainer {status} at epoch {epoch}/{self.epochs}")

    def should_stop(self) -> bool:
        return self.ctx.stop.requested()
