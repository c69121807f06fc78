"""One training loop for TreeGRPO and the flat baselines (DanceGRPO, Flow-GRPO, MixGRPO).

Per epoch: plan (prompts, window, seeds), let the algorithm roll out without gradients
(`Algorithm.roll_out(EpochContext)`: trees or flat groups, scored, rewards turned into per-edge
advantages), then take `train.minibatches` PPO-clipped optimizer steps over the SDE edges
(`update.ppo_update`), log and checkpoint. The algorithm never sees the trainer; the trainer
knows algorithms only through `algorithms/base.py`. Everything random in an epoch derives from (seed, epoch), so a
run resumed from a checkpoint replays exactly what an uninterrupted run would have done.

On N processes (an initialised torch.distributed group, see `distributed.py`) each rank rolls
out its block of the epoch's prompts, with the same noise per tree as one process would draw
(one generator per tree, seeded by (seed, epoch, tree)); rewards are gathered so advantages and
metrics cover the whole epoch, and summed gradients make every optimizer step the one-process
step. Only rank 0 calls the callbacks (metrics, trees, galleries, checkpoints, logs); a stop
request on any rank stops them all. With `train.sharding: fsdp` the denoiser is sharded over the
ranks (treegrpo/sharding.py): every rank then joins each forward, galleries included, and
writes its shards of each checkpoint (DCP, treegrpo/checkpoint.py).

    trainer = Trainer(config, load_model(config.model), load_rewards(config.reward_weights),
                      callbacks=[JsonlMetrics(out / "metrics.jsonl")], checkpoint_root=out / "ckpt")
    status = trainer.run()   # "completed" or "stopped"
"""

from __future__ import annotations

import copy
import functools
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from treegrpo.algorithms import get_algorithm
from treegrpo.algorithms.base import EpochContext, EpochPlan, EpochRollout
from treegrpo.callbacks import Callback, CallbackList, RunInfo, SampleBatch
from treegrpo.checkpoint import (
    TrainState,
    load_checkpoint,
    save_checkpoint,
    save_sharded_checkpoint,
)
from treegrpo.config import RunConfig
from treegrpo.datasets.prompt_rows import draw, open_prompts
from treegrpo.distributed import any_rank, current_ranks, gather_to_main, shard_range
from treegrpo.edges import EdgeBatch
from treegrpo.ema import EMA_FILE, WeightsEMA
from treegrpo.epochs import is_gallery_epoch, is_tree_epoch
from treegrpo.evaluate import eval_rows, sample_and_score
from treegrpo.export import LORA_EXPORT_DIR, write_lora_export
from treegrpo.models.base import Conditioning, ModelAdapter
from treegrpo.optim import build_optimizer, store_weights
from treegrpo.overopt import gallery_diversity, watch_metrics
from treegrpo.rewards.registry import RewardFn
from treegrpo.scoring import Scorer, summarise
from treegrpo.seeds import GALLERY_NOISE_STREAM, LORA_INIT_STREAM, noise_generator, stream_seed
from treegrpo.sharding import (
    compute_dtype,
    fill_shards,
    full_state,
    shard_denoiser,
    sharding_active,
)
from treegrpo.shares import Layout, resumed_layout, run_layout
from treegrpo.text_encoders import use_text_encoders
from treegrpo.update import ppo_update

# Galleries cycle their prompts (each time with new noise) up to this many images, so the eval
# reward of a small prompt set is an average over enough samples to compare epochs.
GALLERY_MIN_IMAGES = 32
# With a remote reward (or config.reward_workers > 0): the epoch's trees grow in this many
# chunks, and this many chunks may be in flight at once (overlap.py; reward_workers overrides).
REMOTE_SCORE_CHUNKS = 4
REMOTE_SCORE_CONCURRENCY = 2


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        adapter: ModelAdapter,
        rewards: dict[str, RewardFn],
        callbacks: Sequence[Callback] = (),
        checkpoint_root: Path | None = None,
        datasets: Path | None = None,
    ) -> None:
        """`datasets`: the folder of stored dataset versions (`<sha256>/`) that a config's
        `prompts: {dataset: ...}` is read from (treegrpo/datasets/)."""
        # Nulls in the config (eta, SDE, the baselines' knobs) take the algorithm's defaults.
        self.algorithm = get_algorithm(config.algorithm)
        self.requested_config = config
        config = self.algorithm.resolve(config, adapter.family, adapter.default_cfg_scale)
        self.config = config
        self.adapter = adapter
        self.rewards = rewards
        self.reward_weights = config.reward_weights
        # A remote reward is scored in chunks on threads while later trees grow (overlap.py);
        # the result is that of scoring the same chunks serially (reward_concurrency = 0).
        remote = any(getattr(fn, "remote", False) for fn in rewards.values())
        workers = config.reward_workers or (REMOTE_SCORE_CONCURRENCY if remote else 0)
        self.reward_chunks = REMOTE_SCORE_CHUNKS if workers else 1
        self.reward_concurrency = workers
        self.scorer()  # a reward without a scoring function fails here, not after an epoch
        self.ranks = current_ranks()
        if config.prompts_per_epoch % self.ranks.world:
            raise ValueError(
                f"prompts_per_epoch = {config.prompts_per_epoch} does not split evenly over "
                f"{self.ranks.world} processes"
            )
        # Every rank asks for stop requests; only rank 0 reports, writes and checkpoints.
        self.stop_requests = CallbackList(callbacks)
        self.callbacks = CallbackList(callbacks if self.ranks.is_main else ())
        self.checkpoint_root = checkpoint_root
        assert config.sampling.sde is not None and config.sampling.eta is not None
        self.schedule = adapter.make_schedule(
            config.sampling.steps, config.sampling.grid, config.sampling.sde
        )
        # Every step an epoch may sample stochastically must have noise to sample.
        self.schedule.check_stochastic(
            self.algorithm.possible_sde_steps(config), config.sampling.eta
        )
        # Prompt rows (prompt, metadata) are read when an epoch draws them: a dataset split
        # stays memory-mapped, however many rows it has.
        self.prompts = open_prompts(config.prompts, datasets)
        held_out = eval_rows(config, datasets)
        self.eval_prompts = [prompt for prompt, _ in held_out]
        repeats = -(-GALLERY_MIN_IMAGES // len(held_out))
        self.gallery_prompts = self.eval_prompts * repeats
        self.gallery_metadata = [meta for _, meta in held_out] * repeats
        use_text_encoders(adapter, config.train.text_encoders)
        if config.train.lora_rank:
            adapter.enable_lora(
                config.train.lora_rank, seed=stream_seed(config.seed, 0, LORA_INIT_STREAM)
            )
        if config.train.grad_checkpointing:
            adapter.enable_gradient_checkpointing()
        self.sharded = sharding_active(config.train, self.ranks)
        # The reference policy for the optional KL is the model as loaded, before any update.
        self.reference = None
        if self.sharded:
            dtype = compute_dtype(adapter)
            # Shard within a machine, replicate across machines (HSDP): only one gradient
            # all-reduce per step crosses the network.
            replicas = config.nodes
            # Only rank 0 holds the loaded weights (the other ranks' denoisers are empty, see
            # registry.load_model_for): they reach the other ranks' shards by broadcast.
            loaded = full_state(adapter.denoiser)
            if config.train.kl_beta:
                # Sharded forward-only, like the policy: not a second full model per rank.
                self.reference = copy.deepcopy(adapter.denoiser).requires_grad_(False).eval()
                shard_denoiser(self.reference, adapter.device, dtype, replicas)
                fill_shards(self.reference, loaded, adapter.device)
            shard_denoiser(adapter.denoiser, adapter.device, dtype, replicas)
            fill_shards(adapter.denoiser, loaded, adapter.device)
            del loaded
        self.parameters = adapter.trainable_parameters()
        if not self.parameters:
            raise ValueError(f"model {adapter.name!r} has no trainable parameters")
        # The optimizer's float32 masters start from the full-precision weights.
        self.optimizer = build_optimizer(self.parameters, config.train, adapter.device)
        store_weights(self.parameters, config.train.weights_dtype)
        if config.train.kl_beta and self.reference is None:
            self.reference = copy.deepcopy(adapter.denoiser).requires_grad_(False).eval()
        if config.train.compile:  # after the reference copy: that one stays eager
            adapter.compile_denoiser()
        # Flow-GRPO's EMA of the trained weights (treegrpo/ema.py): galleries sample with it.
        self.ema = (
            WeightsEMA(adapter.denoiser, config.train.ema_decay, config.train.ema_every)
            if config.train.ema
            else None
        )
        self.layout = run_layout(self.ranks.world, self.sharded, config.nodes)
        self.state = TrainState(shares=self.layout.shares, shards=self.layout.shards)

    # -- public --------------------------------------------------------------------------------

    def resume(self, checkpoint: Path) -> None:
        """Continue from a checkpoint: weights, optimizer and progress."""
        self.state, _ = load_checkpoint(checkpoint, self.adapter.denoiser, self.optimizer)
        saved = Layout(self.state.shares, self.state.shards)
        self.layout = resumed_layout(
            saved, self.ranks.world, self.config.prompts_per_epoch, self.layout
        )
        self.state.shares, self.state.shards = self.layout.shares, self.layout.shards
        self.callbacks.on_log(f"resumed from {checkpoint} at epoch {self.state.epoch}")
        if self.ema is not None:
            if (checkpoint / EMA_FILE).is_file():
                self.ema.load_state_dict(load_file(str(checkpoint / EMA_FILE)))
            else:
                # A checkpoint of a run without train.ema: the average starts here.
                self.ema = WeightsEMA(
                    self.adapter.denoiser, self.config.train.ema_decay, self.config.train.ema_every
                )
                self.callbacks.on_log(f"{checkpoint} holds no EMA; it starts from its weights")
        if self.layout.shares > self.ranks.world:
            self.callbacks.on_log(
                f"one process sums each step's gradient from the {self.layout.shares} ranks' "
                "shares the checkpoint was trained on, in their order"
            )

    def run(self) -> str:
        """Train to `config.epochs`; returns "completed", or "stopped" after a stop request."""
        config = self.config
        info = self.run_info()
        self.callbacks.on_start(info)
        self.callbacks.on_log(
            f"{config.algorithm}: {info.images_per_epoch} images, "
            f"{info.trained_edges_per_epoch} trained edges and at most "
            f"{info.model_evals_per_epoch} model evaluations per epoch"
        )
        if self.state.epoch == 0 and config.sample_every and self.samples_galleries:
            self.callbacks.on_epoch_end(0, self.held_out(0, self.sample_gallery(0)))
        last_saved = -1
        status = "completed"
        while self.state.epoch < config.epochs:
            if self.should_stop():
                status = "stopped"
                break
            metrics = self.train_epoch(self.state.epoch)
            if metrics is None:  # stop requested between rollout and update
                status = "stopped"
                break
            epoch = self.state.epoch
            # The final epoch always logs a gallery (treegrpo.config.is_gallery_epoch).
            gallery = is_gallery_epoch(epoch, epochs=config.epochs, every=config.sample_every)
            if gallery and self.samples_galleries:
                metrics.update(self.held_out(epoch, self.sample_gallery(epoch)))
                watch, self.state.watch = watch_metrics(metrics, self.state.watch)
                metrics.update(watch)
            self.callbacks.on_epoch_end(epoch, metrics)
            if config.checkpoint_every and epoch % config.checkpoint_every == 0:
                self.save()
                last_saved = epoch
        if last_saved != self.state.epoch:
            self.save()
        self.callbacks.on_end(status, self.state.epoch)
        return status

    @property
    def samples_galleries(self) -> bool:
        """Rank 0 samples the galleries; under sharding every rank joins its forwards."""
        return self.ranks.is_main or self.sharded

    def should_stop(self) -> bool:
        """A stop request on any rank (all ranks call this at the same points)."""
        return any_rank(self.stop_requests.should_stop())

    def save(self) -> Path | None:
        """A checkpoint: written by rank 0 (every rank holds the same weights and optimizer), or
        under train.sharding fsdp by every rank, each its shards (DCP)."""
        sharded = self.config.train.sharding == "fsdp"
        if self.checkpoint_root is None or not (self.ranks.is_main or sharded):
            return None
        prefix = self.adapter.export_prefix
        lora_export = self.config.train.lora_rank and prefix is not None
        ema = self.ema
        extra = None
        if lora_export or ema is not None:

            def extra(folder: Path) -> None:
                if lora_export:
                    # A LoRA checkpoint carries its diffusers export (lora/), so the API can
                    # serve it.
                    assert prefix is not None
                    write_lora_export(folder, folder / LORA_EXPORT_DIR, prefix)
                if ema is not None:
                    save_file(ema.state_dict(), str(folder / EMA_FILE))

        if sharded:
            # Also on one process (a sharded run resumed there): one layout per run.
            path = save_sharded_checkpoint(
                self.checkpoint_root,
                self.adapter.denoiser,
                self.optimizer,
                self.state,
                self.config.to_dict(),
                self.ranks.is_main,
                extra,
            )
        else:
            path = save_checkpoint(
                self.checkpoint_root,
                self.adapter.denoiser,
                self.optimizer,
                self.state,
                self.config.to_dict(),
                extra,
            )
        self.callbacks.on_checkpoint(self.state.epoch, path)
        return path

    def held_out(self, epoch: int, metrics: dict[str, float]) -> dict[str, float]:
        """Remember a gallery's held-out rewards (for the model card of the next export)."""
        self.state.held_out = dict(metrics)
        self.state.held_out_epoch = epoch
        return metrics

    def run_info(self) -> RunInfo:
        config = self.config
        images, edges, evals = self.algorithm.epoch_counts(config)
        return RunInfo(
            algorithm=config.algorithm,
            start_epoch=self.state.epoch,
            epochs=config.epochs,
            images_per_epoch=images,
            trained_edges_per_epoch=edges,
            model_evals_per_epoch=evals,
            config=config.to_dict(),
        )

    # -- one epoch -----------------------------------------------------------------------------

    def plan_epoch(self, epoch: int) -> EpochPlan:
        config = self.config
        rng = random.Random(stream_seed(config.seed, epoch, 0))
        generator = torch.Generator().manual_seed(stream_seed(config.seed, epoch, 1))
        count = config.prompts_per_epoch
        # Seeded by (seed, epoch) alone: a resumed run draws the rows it would have drawn.
        rows = self.prompts.rows(draw(len(self.prompts), count, rng))
        prompts = [prompt for prompt, _ in rows]
        metadata = [meta for _, meta in rows]
        # A prompt drawn twice is one group (its rows share the prompt and the metadata).
        keys = [(prompt, json.dumps(meta, sort_keys=True)) for prompt, meta in rows]
        ids = {key: i for i, key in enumerate(dict.fromkeys(keys))}
        groups = torch.tensor([ids[key] for key in keys])
        start = self.algorithm.window_start(config, epoch, rng)
        local = shard_range(count, self.ranks.rank, self.ranks.world)
        return EpochPlan(epoch, prompts, groups, start, generator, rng, local, metadata)

    def scorer(self) -> Scorer:
        """A fresh scorer (its clock at zero) over the run's rewards."""
        return Scorer(
            self.adapter.decode,
            self.rewards,
            self.reward_weights,
            self.reward_chunks,
            self.reward_concurrency,
        )

    def epoch_context(self, plan: EpochPlan, cond: Conditioning, scorer: Scorer) -> EpochContext:
        epoch, config = plan.epoch, self.config
        return EpochContext(
            config=config,
            adapter=self.adapter,
            schedule=self.schedule,
            plan=plan,
            cond=cond,
            noise=functools.partial(noise_generator, config.seed, epoch),
            scorer=scorer,
            record_trees=is_tree_epoch(epoch, epochs=config.epochs, every=config.log_tree_every),
        )

    def train_epoch(self, epoch: int) -> dict[str, float] | None:
        """Roll out, score, update. Returns the epoch's metrics, or None if asked to stop."""
        plan = self.plan_epoch(epoch)
        started = time.perf_counter()
        # This process's CPU seconds (all its threads): unlike wall-clock, other work on the
        # machine barely moves it, so run-to-run comparisons read it where it is logged.
        cpu_started = time.process_time()
        scorer = self.scorer()
        self.adapter.denoiser.eval()
        cond = self.adapter.encode_prompts(plan.local_prompts)
        with torch.no_grad():
            rollout = self.algorithm.roll_out(self.epoch_context(plan, cond, scorer))
        self.state.model_evals += rollout.model_evals
        self.emit_trees(epoch + 1, rollout)
        edges, metrics, images = rollout.edges, rollout.metrics, rollout.images
        rollout_seconds = time.perf_counter() - started
        if self.should_stop():
            return None
        self.adapter.denoiser.train()
        # Tree (prompt) order: every tree has as many edges, so this rank's edges are block
        # `rank` of the epoch's edges, which is how `update` splits each minibatch.
        edges = edges.select(torch.argsort(edges.prompt_index.cpu(), stable=True))
        metrics.update(self.update(edges, cond, plan.generator, epoch))
        epoch_seconds = time.perf_counter() - started
        epoch_cpu_seconds = time.process_time() - cpu_started
        self.state.epoch = epoch + 1
        self.state.cpu_clock += epoch_cpu_seconds
        self.state.images_seen += images
        self.state.wall_clock += epoch_seconds
        metrics.update(
            {
                "window_start": float(plan.window_start),
                "images_seen": float(self.state.images_seen),
                "model_evals": float(self.state.model_evals),
                "time/rollout": rollout_seconds - scorer.seconds,
                "time/reward": scorer.seconds,
                "time/update": epoch_seconds - rollout_seconds,
                "time/epoch": epoch_seconds,
                "throughput/images_per_s": images / epoch_seconds,
                "wall_clock": self.state.wall_clock,
                "time/epoch_cpu": epoch_cpu_seconds,
                "cpu_clock": self.state.cpu_clock,
            }
        )
        return metrics

    def emit_trees(self, epoch: int, rollout: EpochRollout) -> None:
        """Every rank's tree records, collected on rank 0 and handed to the callbacks."""
        if rollout.tree_records is None:
            return
        records = [record for part in gather_to_main(rollout.tree_records) for record in part]
        for record in records:
            record.meta = {
                "model": self.config.model,
                "epoch": epoch,
                "seed": self.config.seed,
                "reward": self.config.to_dict()["reward"],
            }
            self.callbacks.on_tree(epoch, record)

    def update(
        self, edges: EdgeBatch, cond: Conditioning, generator: torch.Generator, epoch: int = 0
    ) -> dict[str, float]:
        """PPO-clipped steps over this rank's edges (update.ppo_update, docs/TREEGRPO.md §6);
        the EMA, when kept, folds in after each optimizer step (numbered over the run)."""
        after_step = None
        if self.ema is not None:
            ema, first = self.ema, epoch * self.config.train.minibatches

            def after_step(number: int) -> object:
                return ema.step(first + number)

        return ppo_update(
            self.adapter,
            self.schedule,
            self.optimizer,
            self.parameters,
            edges,
            cond,
            generator,
            self.config.sampling,
            self.config.train,
            self.ranks,
            self.reference,
            self.sharded,
            self.layout,
            after_step,
        )

    # -- galleries -----------------------------------------------------------------------------

    def sample_gallery(self, epoch: int) -> dict[str, float]:
        """ODE samples of the evaluation prompts from the same noise every time; with the EMA
        weights when train.ema is on (as Flow-GRPO evaluates)."""
        if self.ema is None:
            return self._sample_gallery(epoch)
        with self.ema.swapped_in():
            return self._sample_gallery(epoch)

    def _sample_gallery(self, epoch: int) -> dict[str, float]:
        self.adapter.denoiser.eval()
        generator = torch.Generator().manual_seed(
            stream_seed(self.config.seed, 0, GALLERY_NOISE_STREAM)
        )
        initial = torch.randn(
            (len(self.gallery_prompts), *self.adapter.latent_shape), generator=generator
        )
        images, rewards = sample_and_score(
            self.adapter,
            self.schedule,
            self.scorer(),
            self.gallery_prompts,
            initial,
            self.config.sampling.resolved_cfg_scale,
            self.config.sampling.max_batch,
            self.gallery_metadata,
        )
        self.callbacks.on_samples(SampleBatch(epoch, list(self.gallery_prompts), images, rewards))
        return {
            **summarise(rewards, self.reward_weights, prefix="eval/"),
            "watch/diversity": gallery_diversity(images),
        }
