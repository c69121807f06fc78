"""What each kind of job does inside the child process (backend/job_params.py says what the
parameters mean):

- train: the core Trainer, any algorithm or preset, resumed from the job's checkpoint if it has one;
- sample: grow logged trees for the config's prompts with a source job's checkpoint (or the base
  model);
- evaluate: ODE samples of held-out prompts scored by the eval rewards, for one model or a table
  of models (the base model and checkpoints) x rewards;
- branch (a sample job with params.branch): regrow k children from a stored tree node;
- playground (a sample job with params.playground): one prompt and seed, N images from the base
  model and N from a checkpoint, from the same initial noises, each scored by every reward.

Each returns "completed" or "stopped" (a stop request was honoured) and raises on failure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path
from typing import Any

import torch

from backend import crud
from backend.db import session_scope
from backend.errors import NotFound
from backend.job_params import (
    BranchParams,
    EvaluateModel,
    EvaluateParams,
    PlaygroundParams,
    SampleParams,
    TrainParams,
    parse_params,
)
from backend.storage import checkpoints_relpath, job_dir, trees_relpath
from treegrpo.config import RunConfig
from workers import policy_cache
from workers.context import JobContext
from workers.experiment_run import ExperimentProbe
from workers.policy_cache import checkpoint_key
from workers.recorder import (
    JobRecorder,
    store_branch_nodes,
    store_samples,
    store_tree,
    write_metrics,
)
from workers.secrets import resolve_secret

# Images per model call batch in evaluation (each chunk also checks the stop request).
EVAL_CHUNK = 64
MAX_SEED = 2**31 - 1


class JobError(RuntimeError):
    """A job that cannot run as asked (a missing checkpoint, a node with no latent, ...)."""


def fetch_datasets(ctx: JobContext, config: RunConfig) -> Path:
    """The store's datasets folder, holding (fetched from a remote store) every dataset version
    the config names. The versions were pinned at submit; reading one checks its content hash
    (treegrpo/datasets/table.py), so a version altered since is refused there."""
    from treegrpo.datasets import DatasetRef

    for value in (config.prompts, config.eval_prompts):
        if isinstance(value, DatasetRef):
            if value.sha256 is None:
                raise JobError(f"{value.describe()} was not pinned to a version at submit")
            ctx.fetch(f"datasets/{value.sha256}")
    return ctx.path("datasets")


def run_job(ctx: JobContext) -> str:
    if ctx.kind == "train":
        return run_train(ctx)
    params = parse_params(ctx.kind, ctx.params)
    if isinstance(params, SampleParams):
        if params.branch is not None:
            return run_branch(ctx, params.branch)
        if params.playground is not None:
            return run_playground(ctx, params, params.playground)
        return run_sample(ctx, params)
    if isinstance(params, EvaluateParams):
        return run_evaluate(ctx, params)
    raise JobError(f"unknown job kind {ctx.kind!r}")


# ---------------------------------------------------------------------------------------------
# train


def run_train(ctx: JobContext) -> str:
    """The core trainer on this process, or on this rank of a multi-process job (the trainer
    reports, writes and checkpoints on rank 0 only; every rank honours a stop request)."""
    from treegrpo.distributed import (
        destroy_process_group,
        init_process_group,
        rank_device,
        ranks_from_env,
    )
    from treegrpo.models.registry import load_model_for, resolve_device
    from treegrpo.rewards.registry import load_run_rewards
    from treegrpo.sharding import loads_empty_denoiser
    from treegrpo.trackers import make_trackers, tracker_folders
    from treegrpo.trainer import Trainer

    config = ctx.config
    ranks = ranks_from_env(os.environ)
    if ranks.world != config.world_size:
        raise JobError(
            f"nodes x gpus = {config.nodes} x {config.gpus}, but {ranks.world} processes "
            "were started"
        )
    checkpoint: Path | None = None
    if ctx.checkpoint_path:
        ctx.fetch(ctx.checkpoint_path)
        checkpoint = ctx.path(ctx.checkpoint_path)
        if not (checkpoint / "state.json").exists():
            raise JobError(
                f"the job's checkpoint {ctx.checkpoint_path} is missing from the artifact store"
            )
    device = rank_device(resolve_device(config.device), ranks)
    if ranks.is_main:
        where = f"{ranks.world} processes" if ranks.world > 1 else f"device {device}"
        ctx.log.write(f"loading model {config.model} on {where}")
    init_process_group(ranks, device)
    try:
        # As `treegrpo train`: only rank 0 of a sharded job reads the denoiser's weights.
        empty = loads_empty_denoiser(config.train, ranks)
        adapter = load_model_for(config, str(device), empty_denoiser=empty)
        rewards = load_run_rewards(config, adapter.device, resolve_secret)
        recorder = JobRecorder(ctx)
        # Trackers write into the job's folder of the store (tensorboard/, wandb/, mlruns/).
        trackers = make_trackers(config, ctx.path(job_dir(ctx.job_id)), f"job-{ctx.job_id}")
        run_params = parse_params("train", ctx.params)
        assert isinstance(run_params, TrainParams)
        probe = None
        if run_params.experiment is not None:  # one run of an experiment: its yardstick first
            probe = ExperimentProbe(run_params.experiment, config.epochs)
        trainer = Trainer(
            config,
            adapter,
            rewards,
            callbacks=[*([probe] if probe else []), recorder, *trackers],
            checkpoint_root=ctx.path(checkpoints_relpath(ctx.job_id)),
            datasets=fetch_datasets(ctx, config),
        )
        if probe is not None:
            probe.trainer = trainer
        if checkpoint is not None:
            trainer.resume(checkpoint)
            recorder.images_seen = trainer.state.images_seen
            recorder.model_evals = trainer.state.model_evals
            ctx.notes["checkpoint_epoch"] = trainer.state.epoch
        if ranks.is_main:
            # The metric series continues from the checkpoint: points past it (written by an
            # attempt that did not reach its next checkpoint) are dropped and written again,
            # so the series has neither a gap nor a duplicate. Without one, it starts over.
            last_kept = trainer.state.epoch if checkpoint is not None else -1
            ctx.heartbeat()
            with session_scope() as session:
                dropped = crud.delete_metrics_after(session, job_id=ctx.job_id, step=last_kept)
            if dropped:
                ctx.log.write(f"dropped {dropped} metric points after epoch {last_kept}")
        if probe is not None and checkpoint is None and ranks.is_main:
            write_metrics(ctx, 0, probe.base_point())
        status = trainer.run()
        if probe is not None and probe.spent:
            status = "completed"  # the budget ended it, not a stop request
        if ranks.is_main:
            for folder in tracker_folders(config):
                if ctx.path(f"{job_dir(ctx.job_id)}/{folder}").exists():
                    ctx.publish(f"{job_dir(ctx.job_id)}/{folder}")
    finally:
        destroy_process_group()
    return "completed" if status == "completed" else "stopped"


# ---------------------------------------------------------------------------------------------
# where a policy comes from


@dataclasses.dataclass
class PolicySource:
    checkpoint: Path | None
    epoch: int
    job_id: int | None

    def describe(self) -> str:
        if self.job_id is None:
            return "the base model"
        if self.checkpoint is None:
            return f"job {self.job_id}'s base model (epoch 0)"
        return f"job {self.job_id}'s checkpoint of epoch {self.epoch}"

    def meta(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "epoch": self.epoch}


def source_policy(ctx: JobContext, source_job_id: int | None, epoch: int | None) -> PolicySource:
    """The checkpoint a sample or evaluate job samples with (None: the base model)."""
    from treegrpo.policy import checkpoint_epochs

    if source_job_id is None:
        return PolicySource(None, 0, None)
    try:
        with session_scope() as session:
            latest = crud.get_job(session, job_id=source_job_id).checkpoint_path
    except NotFound as exc:
        raise JobError(f"params.source_job_id: job {source_job_id} does not exist") from exc
    ctx.fetch_checkpoints(checkpoints_relpath(source_job_id))
    available = checkpoint_epochs(ctx.path(checkpoints_relpath(source_job_id)))
    if epoch is not None:
        if epoch in available:
            return PolicySource(available[epoch], epoch, source_job_id)
        if epoch == 0:
            return PolicySource(None, 0, source_job_id)  # no update yet: the base model
        shown = ", ".join(str(e) for e in available) or "none"
        raise JobError(
            f"params.checkpoint_epoch: job {source_job_id} has no checkpoint of epoch {epoch} "
            f"(checkpointed epochs: {shown})"
        )
    if latest:
        path = ctx.path(latest)
        for found_epoch, found in available.items():
            if found == path:
                return PolicySource(found, found_epoch, source_job_id)
    if available:
        last = max(available)
        return PolicySource(available[last], last, source_job_id)
    raise JobError(f"params.source_job_id: job {source_job_id} has no checkpoint yet")


def policy_for_tree(ctx: JobContext, meta: dict[str, Any], fallback_job: int) -> PolicySource:
    """The policy that grew a logged tree, or the checkpoint nearest to it."""
    from treegrpo.policy import nearest_checkpoint

    policy = meta.get("policy") or {}
    job_id = policy.get("job_id", fallback_job)
    epoch = int(policy.get("epoch", 0) or 0)
    if job_id is None or epoch <= 0:
        return PolicySource(None, 0, job_id)
    ctx.fetch_checkpoints(checkpoints_relpath(int(job_id)))
    found = nearest_checkpoint(ctx.path(checkpoints_relpath(int(job_id))), epoch)
    if found is None:
        ctx.log.write(f"job {job_id} kept no checkpoint; branching with its base model")
        return PolicySource(None, 0, int(job_id))
    if found[0] != epoch:
        ctx.log.write(
            f"the tree was grown by job {job_id}'s policy of epoch {epoch}, which was not "
            f"checkpointed; using the nearest checkpoint, epoch {found[0]}"
        )
    return PolicySource(found[1], found[0], int(job_id))


def branch_policy(source: PolicySource, tree_meta: dict[str, Any]) -> dict[str, Any]:
    """Branch.policy: the policy a branch samples with, beside the epoch of the policy that
    grew its training tree (they differ when that epoch was not checkpointed)."""
    grown = tree_meta.get("policy") or {}
    return {
        **source.meta(),
        "checkpoint": source.checkpoint is not None,
        "tree_epoch": int(grown.get("epoch", 0) or 0),
        "text": source.describe(),
    }


def cached_policy(config: RunConfig, checkpoint: Path | None, ema: bool = False) -> Any:
    """load_policy, kept for the next job in the interactive lane's warm process."""
    from treegrpo.policy import load_policy

    sampling = config.sampling  # the image size and guidance are built into the adapter
    key = (
        "policy",
        config.model,
        config.device,
        config.dtype,
        sampling.height,
        sampling.width,
        sampling.guidance,
        ema,
        *checkpoint_key(checkpoint),
    )
    return policy_cache.cached(key, lambda: load_policy(config, checkpoint, ema))


def cached_rewards(config: RunConfig, device: Any, eval_rewards: bool = False) -> Any:
    """load_run_rewards, kept likewise (a reward model can be bigger than the policy); with
    `eval_rewards`, the rewards an evaluation reports (eval.rewards) instead of training's."""
    from treegrpo.rewards.registry import load_run_rewards

    if eval_rewards:
        config = dataclasses.replace(config, reward=tuple(config.eval_reward_weights.items()))
    key = (
        "rewards",
        json.dumps(config.reward_weights, sort_keys=True),
        json.dumps(config.reward_options, sort_keys=True, default=str),
        str(device),
    )
    return policy_cache.cached(key, lambda: load_run_rewards(config, device, resolve_secret))


def with_seed(config: RunConfig, seed: int) -> RunConfig:
    return dataclasses.replace(config, seed=seed % MAX_SEED)


# ---------------------------------------------------------------------------------------------
# sample: logged trees


def run_sample(ctx: JobContext, params: SampleParams) -> str:
    from treegrpo.datasets.prompt_rows import first_rows, open_prompts
    from treegrpo.sample_tree import grow_tree
    from treegrpo.scoring import summarise_means
    from treegrpo.windows import window_start

    config = ctx.config
    source = source_policy(ctx, params.source_job_id, params.checkpoint_epoch)
    ctx.log.write(f"growing {params.trees} tree(s) with {source.describe()}")
    adapter = cached_policy(config, source.checkpoint)
    rewards = cached_rewards(config, adapter.device)
    rows = first_rows(open_prompts(config.prompts, fetch_datasets(ctx, config)), params.trees)
    ctx.heartbeat(progress_step=0, progress_total=params.trees)
    leaves: dict[str, list[float]] = {name: [] for name in rewards}
    for index in range(params.trees):
        if ctx.stop.requested():
            return "stopped"
        prompt, metadata = rows[index % len(rows)]
        tree_config = with_seed(config, config.seed + index)
        start = window_start(config.tree, config.sampling.steps, 0, random.Random(tree_config.seed))
        record = grow_tree(adapter, prompt, tree_config, rewards, start, metadata)
        record.index = index
        store_tree(ctx, source.epoch, record, tree_config.seed, {"policy": source.meta()})
        for node in record.nodes:
            if node.is_leaf and node.rewards:
                for name, value in node.rewards.items():
                    leaves[name].append(value)
        ctx.heartbeat(progress_step=index + 1, progress_total=params.trees)
        ctx.log.write(f"tree {index + 1}/{params.trees}: {prompt!r}, window start {start}")
    means = {name: sum(v) / len(v) for name, v in leaves.items() if v}
    write_metrics(ctx, source.epoch, summarise_means(means, config.reward_weights))
    return "completed"


# ---------------------------------------------------------------------------------------------
# evaluate: held-out prompts, every reward


def run_evaluate(ctx: JobContext, params: EvaluateParams) -> str:
    """Each model of the table (one, or the base model and checkpoints) samples the held-out
    prompts from the same fixed noises with the eval steps, scored by the eval rewards."""
    from treegrpo.evaluate import eval_noise, eval_rows, per_image

    config = ctx.config
    weights = config.eval_reward_weights
    per_prompt = params.samples_per_prompt or config.eval.images_per_prompt
    models = params.rows()
    sources = [source_policy(ctx, model.job_id, model.epoch) for model in models]
    held_out = eval_rows(config, fetch_datasets(ctx, config), whole_split=True)
    prompts = [prompt for prompt, _ in held_out]
    rows = per_image(prompts, per_prompt)
    row_metadata = per_image([meta for _, meta in held_out], per_prompt)
    chunks = -(-len(rows) // EVAL_CHUNK)
    names = "; ".join(source.describe() for source in sources)
    ctx.log.write(
        f"evaluating {names} on {len(prompts)} prompts x {per_prompt} images, "
        f"{config.eval_steps} steps, eval seed {config.eval.seed}, with {', '.join(weights)}"
    )
    ctx.heartbeat(progress_step=0, progress_total=chunks * len(sources))
    for row, (model, source) in enumerate(zip(models, sources, strict=True)):
        ema = _uses_ema(model, source)
        adapter = cached_policy(config, source.checkpoint, ema)
        initial = eval_noise(config.eval.seed, len(prompts), per_prompt, adapter.latent_shape)
        sampled = _evaluate_model(ctx, adapter, rows, row_metadata, initial, row * chunks)
        if sampled is None:
            return "stopped"
        images, scores = sampled
        # One model: its gallery and metrics at its epoch; several: at their row.
        step = source.epoch if len(sources) == 1 else row
        store_samples(ctx, step, rows, images, scores, weights)
        metrics = table_metrics(row, source, ema, scores, per_prompt, params.confidence)
        write_metrics(ctx, step, {**summarise_eval(scores, weights), **metrics})
        label = source.describe() + (" (EMA)" if ema else "")
        ctx.log.write(label + ": " + _interval_text(metrics, list(weights)))
    return "completed"


def _uses_ema(model: EvaluateModel, source: PolicySource) -> bool:
    from treegrpo.policy import has_ema

    kept = has_ema(source.checkpoint)
    if model.ema and not kept:
        raise JobError(f"{source.describe()} keeps no EMA weights (its run had train.ema off)")
    return kept if model.ema is None else model.ema


def _evaluate_model(
    ctx: JobContext,
    adapter: Any,
    rows: list[str],
    row_metadata: list[Any],
    initial: torch.Tensor,
    done: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
    """ODE samples of `rows` from `initial` with the eval schedule, scored by the eval rewards
    with each row's metadata,
    in chunks (each checks the stop request): ((n, C, H, W) CPU images, name -> (n,) scores),
    or None when a stop was requested."""
    from treegrpo.algorithms import resolve_for_model
    from treegrpo.evaluate import eval_schedule, sample_and_score
    from treegrpo.scoring import Scorer

    config = ctx.config
    weights = config.eval_reward_weights
    rewards = cached_rewards(config, adapter.device, eval_rewards=True)
    resolved, _ = resolve_for_model(config, adapter)
    schedule = eval_schedule(adapter, resolved)
    scorer = Scorer(adapter.decode, rewards, weights)
    images, scores = [], []
    chunks = -(-len(rows) // EVAL_CHUNK)
    for chunk in range(chunks):
        if ctx.stop.requested():
            return None
        part = slice(chunk * EVAL_CHUNK, (chunk + 1) * EVAL_CHUNK)
        decoded, chunk_scores = sample_and_score(
            adapter,
            schedule,
            scorer,
            rows[part],
            initial[part],
            resolved.sampling.resolved_cfg_scale,
            resolved.sampling.max_batch,
            row_metadata[part],
        )
        images.append(decoded.cpu())  # (n, C, H, W) in [0, 1]
        scores.append(chunk_scores)
        ctx.heartbeat(progress_step=done + chunk + 1)
    return torch.cat(images), {name: torch.cat([s[name] for s in scores]) for name in weights}


def summarise_eval(scores: dict[str, torch.Tensor], weights: dict[str, float]) -> dict[str, float]:
    from treegrpo.scoring import summarise

    return summarise(scores, weights, prefix="eval/", spread=True)


def table_metrics(
    row: int,
    source: PolicySource,
    ema: bool,
    scores: dict[str, torch.Tensor],
    per_prompt: int,
    confidence: float,
) -> dict[str, float]:
    """One row of the evaluation table as metric points: which model (`evaluation/job`, 0 for
    the base model; `evaluation/epoch`; `evaluation/ema`) and, per reward, mean, std, n (the
    prompts) and the interval's low and high (`evaluation/<reward>/<stat>`)."""
    from treegrpo.evaluate import score_intervals

    metrics = {
        "evaluation/row": float(row),
        "evaluation/job": float(source.job_id or 0),
        "evaluation/epoch": float(source.epoch),
        "evaluation/ema": float(ema),
        "evaluation/confidence": confidence,
    }
    for name, interval in score_intervals(scores, per_prompt, confidence).items():
        for stat in ("mean", "std", "n", "low", "high"):
            metrics[f"evaluation/{name}/{stat}"] = float(getattr(interval, stat))
    return metrics


def _interval_text(metrics: dict[str, float], names: list[str]) -> str:
    parts = []
    for name in names:
        mean, high = metrics[f"evaluation/{name}/mean"], metrics[f"evaluation/{name}/high"]
        parts.append(f"{name} {mean:.4f} ± {high - mean:.4f}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# playground: the base model and a checkpoint side by side


def run_playground(ctx: JobContext, params: SampleParams, play: PlaygroundParams) -> str:
    """N images of one prompt from the base model (gallery epoch 0) and from the checkpoint
    (gallery of its epoch), from the same N initial noises, scored by every reward."""
    from treegrpo.algorithms import resolve_for_model
    from treegrpo.evaluate import sample_and_score
    from treegrpo.scoring import Scorer

    config = ctx.config
    source = source_policy(ctx, params.source_job_id, params.checkpoint_epoch)
    policies = [PolicySource(None, 0, None)]
    if source.checkpoint is not None:
        policies.append(source)
    rows = [play.prompt] * play.images
    ctx.log.write(
        f"playground: {play.images} image(s) of {play.prompt!r}, seed {play.seed}, from the base "
        f"model" + (f" and {source.describe()}" if source.checkpoint is not None else "")
    )
    ctx.heartbeat(progress_step=0, progress_total=len(policies))
    rewards = None
    summary = []
    for done, policy in enumerate(policies):
        if ctx.stop.requested():
            return "stopped"
        adapter = cached_policy(config, policy.checkpoint)
        rewards = rewards or cached_rewards(config, adapter.device)
        resolved, schedule = resolve_for_model(config, adapter)
        scorer = Scorer(adapter.decode, rewards, config.reward_weights)
        generator = torch.Generator().manual_seed(play.seed)
        initial = torch.randn((play.images, *adapter.latent_shape), generator=generator)
        decoded, scores = sample_and_score(
            adapter,
            schedule,
            scorer,
            rows,
            initial,
            resolved.sampling.resolved_cfg_scale,
            resolved.sampling.max_batch,
        )
        images = decoded.cpu()  # (N, C, H, W) in [0, 1]
        store_samples(ctx, policy.epoch, rows, images, scores, config.reward_weights)
        mean = scorer.summarise(scores)["reward_mean"]
        summary.append(f"{'base' if policy.checkpoint is None else policy.describe()}: {mean:.4f}")
        ctx.heartbeat(progress_step=done + 1, progress_total=len(policies))
    ctx.log.write("mean reward " + "; ".join(summary))
    return "completed"


# ---------------------------------------------------------------------------------------------
# branch: k new children of a stored node


@dataclasses.dataclass
class BranchOrigin:
    """The tree and node a branch job grows from, read in one short session."""

    job_id: int  # the job that logged the tree
    epoch: int
    index: int
    prompt: str
    steps: int
    artifact_dir: str | None
    meta: dict[str, Any]
    grown_with: dict[str, Any] | None  # that job's config
    node_step: int
    node_depth: int
    node_is_leaf: bool
    latent_path: str | None
    latents_dropped: bool  # retention deleted the training tree's latents
    reference: dict[str, list[float]]  # the tree's own leaf scores, per reward


def branch_origin(params: BranchParams) -> BranchOrigin:
    with session_scope() as session:
        tree = crud.get_tree(session, tree_id=params.tree_id)
        node: Any
        if params.node_id is not None:
            node = crud.get_node(session, tree_id=params.tree_id, node_id=params.node_id)
        else:
            assert params.branch_node_id is not None
            node = crud.get_branch_node(
                session, tree_id=params.tree_id, branch_node_id=params.branch_node_id
            )
        try:
            grown_with: dict[str, Any] | None = dict(
                crud.get_job(session, job_id=tree.job_id, include_deleted=True).config
            )
        except NotFound:
            grown_with = None
        # The advantages of branch children are measured against the training tree's leaves.
        reference: dict[str, list[float]] = {}
        for other in tree.nodes:
            if other.is_leaf and other.rewards:
                for name, value in other.rewards.items():
                    reference.setdefault(name, []).append(float(value))
        return BranchOrigin(
            job_id=tree.job_id,
            epoch=tree.epoch,
            index=tree.index,
            prompt=tree.prompt,
            steps=tree.steps,
            artifact_dir=tree.artifact_dir,
            meta=dict(tree.meta or {}),
            grown_with=grown_with,
            node_step=node.step_index,
            node_depth=node.depth,
            node_is_leaf=node.is_leaf,
            latent_path=node.latent_path,
            # A branch node's latent is its branch job's, never dropped by retention.
            latents_dropped=params.node_id is not None and tree.latents_dropped_at is not None,
            reference=reference,
        )


def branch_record(ctx: JobContext, params: BranchParams) -> int:
    """The id of this job's branch record (made at submission; made here for a job created
    without the API)."""
    with session_scope() as session:
        branch = crud.branch_of_job(session, job_id=ctx.job_id)
        if branch is None:
            branch = crud.create_branch(
                session,
                job_id=ctx.job_id,
                tree_id=params.tree_id,
                k=params.k,
                node_id=params.node_id,
                from_branch_node_id=params.branch_node_id,
            )
        return branch.id


def run_branch(ctx: JobContext, params: BranchParams) -> str:
    from treegrpo.algorithms import resolve_for_model
    from treegrpo.branch import advantages_against, branch_nodes, load_latent, regrow
    from treegrpo.branchable import branch_refusal
    from treegrpo.scoring import Scorer
    from treegrpo.seeds import stream_seed

    origin = branch_origin(params)
    named = (
        f"node {params.node_id}"
        if params.node_id is not None
        else f"branch node {params.branch_node_id}"
    )
    steps = origin.steps
    refusal = branch_refusal(
        is_leaf=origin.node_is_leaf or origin.node_step >= steps,
        has_latent=origin.latent_path is not None,
        latents_dropped=origin.latents_dropped,
    )
    if refusal is not None or origin.latent_path is None:
        raise JobError(f"{named} of tree {params.tree_id} {refusal}")
    branch_id = branch_record(ctx, params)
    # The tree's own settings (model, steps, guidance, noise level, rewards) regrow it; this
    # job's config gives the device and the seed of the new noises.
    grown_with = RunConfig.from_dict(origin.grown_with) if origin.grown_with else ctx.config
    config = dataclasses.replace(grown_with, device=ctx.config.device, dtype=ctx.config.dtype)
    source = policy_for_tree(ctx, origin.meta, origin.job_id)
    ctx.log.write(
        f"branching {params.k} children from {named} (step "
        f"{origin.node_step}/{steps}) of tree {params.tree_id} with {source.describe()}"
    )
    with session_scope() as session:  # the page says which checkpoint grew the branch
        crud.set_branch_policy(
            session, branch_id=branch_id, policy=branch_policy(source, origin.meta)
        )
    ctx.heartbeat(progress_step=0, progress_total=1)
    adapter = cached_policy(config, source.checkpoint)
    rewards = cached_rewards(config, adapter.device)
    config, schedule = resolve_for_model(config, adapter)
    assert config.sampling.eta is not None
    ctx.fetch(origin.latent_path)
    try:
        latent = load_latent(ctx.path(origin.latent_path))
    except FileNotFoundError as exc:  # retention dropped it after this job read the row
        refusal = branch_refusal(is_leaf=False, has_latent=False, latents_dropped=True)
        raise JobError(f"{named} of tree {params.tree_id} {refusal}") from exc
    # The job's own stream: branching the same node twice explores different children.
    generator = torch.Generator().manual_seed(stream_seed(ctx.config.seed, ctx.job_id, 0))
    noise = torch.randn((params.k, *adapter.latent_shape), generator=generator)
    prompt = origin.prompt
    grown = regrow(
        adapter,
        schedule,
        adapter.encode_prompts([prompt]),
        latent,
        origin.node_step,
        noise,
        config.sampling.resolved_cfg_scale,
        config.sampling.eta,
        config.sampling.max_batch,
    )
    if ctx.stop.requested():
        return "stopped"
    scorer = Scorer(adapter.decode, rewards, config.reward_weights)
    with torch.no_grad():
        decoded = scorer.decode(grown.x0.reshape(-1, *grown.x0.shape[2:])).cpu()
    images = decoded.reshape(*grown.x0.shape[:2], *decoded.shape[1:])  # (k, L, C', H', W')
    leaf_scores = scorer.score_images(images[:, -1], [prompt] * params.k)
    advantages = advantages_against(
        {name: torch.tensor(values) for name, values in origin.reference.items()},
        leaf_scores,
        config.reward_weights,
    )
    base = origin.artifact_dir or trees_relpath(origin.job_id, origin.epoch, origin.index)
    nodes = branch_nodes(
        grown,
        schedule,
        images,
        leaf_scores,
        advantages,
        config.reward_weights,
        depth=origin.node_depth + 1,
    )
    store_branch_nodes(ctx, f"{base}/branches/job-{ctx.job_id:06d}", branch_id, nodes)
    metrics = scorer.summarise(leaf_scores)
    metrics["advantage/mean"] = float(advantages.mean())
    write_metrics(ctx, 0, metrics)
    ctx.heartbeat(progress_step=1, progress_total=1)
    leaf_rewards = ", ".join(f"{n.reward:.4f}" for n in nodes if n.is_leaf and n.reward is not None)
    ctx.log.write(f"{params.k} children ({len(nodes)} nodes); leaf rewards {leaf_rewards}")
    return "completed"
