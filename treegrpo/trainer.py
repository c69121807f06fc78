"""One training loop for TreeGRPO and the flat baselines (DanceGRPO, Flow-GRPO, MixGRPO).

Per epoch: pick prompts, roll out (trees or flat groups) without gradients, score the final
images, turn rewards into per-edge advantages, then take `train.minibatches` PPO-clipped
optimizer steps over the SDE edges. Everything random in an epoch derives from (seed, epoch), so a
run resumed from a checkpoint replays exactly what an uninterrupted run would have done.

On N processes (an initialised torch.distributed group, see `distributed.py`) each rank rolls
out its block of the epoch's prompts, with the same noise per tree as one process would draw
(one generator per tree, seeded by (seed, epoch, tree)); rewards are gathered so advantages and
metrics cover the whole epoch, and summed gradients make every optimizer step the one-process
step. Only rank 0 calls the callbacks (metrics, trees, galleries, checkpoints, logs); a stop
request on any rank stops them all.

    trainer = Trainer(config, load_model(config.model), load_rewards(config.reward_weights),
                      callbacks=[JsonlMetrics(out / "metrics.jsonl")], checkpoint_root=out / "ckpt")
    status = trainer.run()   # "completed" or "stopped"
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from treegrpo.algorithms import get_algorithm
from treegrpo.callbacks import Callback, CallbackList, RunInfo, SampleBatch
from treegrpo.checkpoint import TrainState, load_checkpoint, save_checkpoint
from treegrpo.config import RunConfig, is_gallery_epoch, is_tree_epoch
from treegrpo.distributed import (
    all_gather_cat,
    all_reduce_gradients,
    any_rank,
    current_ranks,
    gather_to_main,
    shard_range,
    sum_over_ranks,
)
from treegrpo.edges import EdgeBatch
from treegrpo.export import LORA_EXPORT_DIR, write_lora_export
from treegrpo.losses import aggregate_children, kl_to_reference, ppo_clip_loss, ratio_stats
from treegrpo.models.base import Conditioning, ModelAdapter
from treegrpo.optim import build_optimizer, clip_targets, store_weights
from treegrpo.overlap import ScoringQueue
from treegrpo.overopt import gallery_diversity, watch_metrics
from treegrpo.prompts import resolve_prompts
from treegrpo.rewards.registry import RewardFn, score_images
from treegrpo.rollout import TreeRollout, sample_ode
from treegrpo.stepping import gaussian_log_prob
from treegrpo.tree_record import build_tree_records
from treegrpo.tree_scoring import decode_steps

EVAL_PROMPTS_DEFAULT = 8
# Galleries cycle their prompts (each time with new noise) up to this many images, so the eval
# reward of a small prompt set is an average over enough samples to compare epochs.
GALLERY_MIN_IMAGES = 32
GALLERY_NOISE_STREAM = 99
# Tree (or flat group) i of an epoch draws its noise from stream TREE_NOISE_STREAM + i, so a
# rank can draw its own trees' noise without the others'.
TREE_NOISE_STREAM = 1000
# With a remote reward (or config.reward_workers > 0): the epoch's trees grow in this many
# chunks, and this many chunks may be in flight at once (overlap.py; reward_workers overrides).
REMOTE_SCORE_CHUNKS = 4
REMOTE_SCORE_CONCURRENCY = 2
# The LoRA adapters' initial draw (the same on every rank, so ranks start identical).
LORA_INIT_STREAM = 98


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent, reproducible seeds per (run seed, epoch, purpose)."""
    return (seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**62)


def noise_generator(seed: int, epoch: int, tree: int) -> torch.Generator:
    """The generator of tree (or flat group) `tree` of `epoch`: the same on every rank."""
    return torch.Generator().manual_seed(stream_seed(seed, epoch, TREE_NOISE_STREAM + tree))


@dataclass
class EpochPlan:
    epoch: int
    prompts: list[str]  # the whole epoch's, on every rank
    groups: Tensor  # (prompts,) id of each prompt, equal prompts share one
    window_start: int
    generator: torch.Generator
    rng: random.Random
    local: range  # this rank's trees (flat groups): indices into `prompts`

    @property
    def local_prompts(self) -> list[str]:
        return self.prompts[self.local.start : self.local.stop]


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        adapter: ModelAdapter,
        rewards: dict[str, RewardFn],
        callbacks: Sequence[Callback] = (),
        checkpoint_root: Path | None = None,
    ) -> None:
        # Nulls in the config (eta, SDE, the baselines' knobs) take the algorithm's defaults.
        self.algorithm = get_algorithm(config.algorithm)
        self.requested_config = config
        config = self.algorithm.resolve(config, adapter.family, adapter.default_cfg_scale)
        self.config = config
        self.adapter = adapter
        self.rewards = rewards
        self.reward_weights = config.reward_weights
        missing = set(self.reward_weights) - set(rewards)
        if missing:
            raise ValueError(f"no scoring function for reward(s) {sorted(missing)}")
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
        self.prompts = list(resolve_prompts(config.prompts))
        if config.eval_prompts is not None:
            self.eval_prompts = list(resolve_prompts(config.eval_prompts))
        else:
            self.eval_prompts = list(resolve_prompts(config.prompts))[:EVAL_PROMPTS_DEFAULT]
        repeats = -(-GALLERY_MIN_IMAGES // len(self.eval_prompts))
        self.gallery_prompts = self.eval_prompts * repeats
        if config.train.lora_rank:
            adapter.enable_lora(
                config.train.lora_rank, seed=stream_seed(config.seed, 0, LORA_INIT_STREAM)
            )
        if config.train.grad_checkpointing:
            adapter.enable_gradient_checkpointing()
        self.parameters = adapter.trainable_parameters()
        if not self.parameters:
            raise ValueError(f"model {adapter.name!r} has no trainable parameters")
        # The optimizer's float32 masters start from the full-precision weights.
        self.optimizer = build_optimizer(self.parameters, config.train, adapter.device)
        store_weights(self.parameters, config.train.weights_dtype)
        # The reference policy for the optional KL is the model as loaded, before any update.
        self.reference = None
        if config.train.kl_beta:
            self.reference = copy.deepcopy(adapter.denoiser).requires_grad_(False).eval()
        if config.train.compile:  # after the reference copy: that one stays eager
            adapter.compile_denoiser()
        self.state = TrainState()
        self.reward_seconds = 0.0  # time spent decoding and scoring in the current epoch
        # A remote reward is scored in chunks on threads while later trees grow (overlap.py);
        # the result is that of scoring the same chunks serially (reward_concurrency = 0).
        remote = any(getattr(fn, "remote", False) for fn in rewards.values())
        workers = config.reward_workers or (REMOTE_SCORE_CONCURRENCY if remote else 0)
        self.reward_chunks = REMOTE_SCORE_CHUNKS if workers else 1
        self.reward_concurrency = workers

    # -- public --------------------------------------------------------------------------------

    def resume(self, checkpoint: Path) -> None:
        """Continue from a checkpoint: weights, optimizer and progress."""
        self.state, _ = load_checkpoint(checkpoint, self.adapter.denoiser, self.optimizer)
        self.callbacks.on_log(f"resumed from {checkpoint} at epoch {self.state.epoch}")

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
        if self.state.epoch == 0 and config.sample_every and self.ranks.is_main:
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
            if gallery and self.ranks.is_main:
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

    def should_stop(self) -> bool:
        """A stop request on any rank (all ranks call this at the same points)."""
        return any_rank(self.stop_requests.should_stop())

    def save(self) -> Path | None:
        """A checkpoint, written by rank 0 (every rank holds the same weights and optimizer)."""
        if self.checkpoint_root is None or not self.ranks.is_main:
            return None
        prefix = self.adapter.export_prefix
        extra = None
        if self.config.train.lora_rank and prefix is not None:
            # A LoRA checkpoint carries its diffusers export (lora/), so the API can serve it.
            def extra(folder: Path) -> None:
                write_lora_export(folder, folder / LORA_EXPORT_DIR, prefix)

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
        if count <= len(self.prompts):
            prompts = rng.sample(self.prompts, count)
        else:
            prompts = rng.choices(self.prompts, k=count)
        ids = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
        groups = torch.tensor([ids[p] for p in prompts])
        start = self.algorithm.window_start(config, epoch, rng)
        local = shard_range(count, self.ranks.rank, self.ranks.world)
        return EpochPlan(epoch, prompts, groups, start, generator, rng, local)

    def train_epoch(self, epoch: int) -> dict[str, float] | None:
        """Roll out, score, update. Returns the epoch's metrics, or None if asked to stop."""
        plan = self.plan_epoch(epoch)
        started = time.perf_counter()
        self.reward_seconds = 0.0
        self.adapter.denoiser.eval()
        cond = self.adapter.encode_prompts(plan.local_prompts)
        with torch.no_grad():
            epoch_rollout = self.algorithm.roll_out(self, plan, cond)
        edges, metrics, images = epoch_rollout.edges, epoch_rollout.metrics, epoch_rollout.images
        rollout_seconds = time.perf_counter() - started
        if self.should_stop():
            return None
        self.adapter.denoiser.train()
        # Tree (prompt) order: every tree has as many edges, so this rank's edges are block
        # `rank` of the epoch's edges, which is how `update` splits each minibatch.
        edges = edges.select(torch.argsort(edges.prompt_index.cpu(), stable=True))
        metrics.update(self.update(edges, cond, plan.generator))
        epoch_seconds = time.perf_counter() - started
        self.state.epoch = epoch + 1
        self.state.images_seen += images
        self.state.wall_clock += epoch_seconds
        metrics.update(
            {
                "window_start": float(plan.window_start),
                "images_seen": float(self.state.images_seen),
                "model_evals": float(self.state.model_evals),
                "time/rollout": rollout_seconds - self.reward_seconds,
                "time/reward": self.reward_seconds,
                "time/update": epoch_seconds - rollout_seconds,
                "time/epoch": epoch_seconds,
                "throughput/images_per_s": images / epoch_seconds,
                "wall_clock": self.state.wall_clock,
            }
        )
        return metrics

    # -- services the algorithms use -----------------------------------------------------------

    def noise_generator(self, epoch: int, tree: int) -> torch.Generator:
        """The noise generator of tree (or flat group) `tree` of `epoch`."""
        return noise_generator(self.config.seed, epoch, tree)

    def logs_tree(self, epoch: int) -> bool:
        return is_tree_epoch(epoch, epochs=self.config.epochs, every=self.config.log_tree_every)

    def score(self, latents: Tensor, prompts: list[str]) -> dict[str, Tensor]:
        """Decode and score; the time counts as the epoch's reward time."""
        started = time.perf_counter()
        images = self.adapter.decode(latents)
        scores = score_images(self.rewards, images, prompts)
        self.reward_seconds += time.perf_counter() - started
        return scores

    def scoring_queue(self) -> ScoringQueue:
        return ScoringQueue(
            lambda images, prompts: score_images(self.rewards, images, prompts),
            self.reward_concurrency,
        )

    def submit_scoring(self, queue: ScoringQueue, latents: Tensor, prompts: list[str]) -> None:
        """Decode here (the model's thread), score on the queue's threads."""
        started = time.perf_counter()
        images = self.adapter.decode(latents)
        self.reward_seconds += time.perf_counter() - started
        queue.submit(images, prompts)

    def collect_scores(self, queue: ScoringQueue) -> dict[str, Tensor]:
        """Every submitted chunk's scores; the time the rollout waited counts as reward time."""
        scores = queue.results()
        self.reward_seconds += queue.wait_seconds
        return scores

    def reward_metrics(self, rewards: dict[str, Tensor]) -> dict[str, float]:
        metrics: dict[str, float] = {}
        total = 0.0
        for name, values in rewards.items():
            metrics[f"reward/{name}_mean"] = float(values.mean())
            metrics[f"reward/{name}_std"] = float(values.std(unbiased=False))
            total += self.reward_weights[name] * float(values.mean())
        metrics["reward_mean"] = total
        return metrics

    def log_trees(
        self,
        rollout: TreeRollout,
        rewards: dict[str, Tensor],
        values: list[Tensor],
        epoch: int,
        first_tree: int,
    ) -> None:
        """Records of this rank's trees, numbered from `first_tree`, collected on rank 0."""
        images = {
            step: block.cpu() for step, block in decode_steps(self.adapter, rollout.x0).items()
        }
        leaf_rewards = {name: r.reshape(rollout.trees, -1) for name, r in rewards.items()}
        records = build_tree_records(
            rollout,
            self.schedule,
            self.config.tree.backup,
            leaf_rewards,
            self.reward_weights,
            values,
            images,
        )
        for record in records:
            record.index += first_tree
        records = [record for part in gather_to_main(records) for record in part]
        for record in records:
            record.meta = {
                "model": self.config.model,
                "epoch": epoch,
                "seed": self.config.seed,
                "reward": self.config.to_dict()["reward"],
            }
            self.callbacks.on_tree(epoch, record)

    # -- policy update -------------------------------------------------------------------------

    def update(
        self, edges: EdgeBatch, cond: Conditioning, generator: torch.Generator
    ) -> dict[str, float]:
        """PPO-clipped steps over the edges (TREEGRPO.md section 6), `train.minibatches` of them.

        `edges` are this rank's block of the epoch's edges, in tree order. The permutation and
        minibatches are drawn over the epoch's edges on every rank alike; a rank trains the
        members of each minibatch it holds, every loss is divided by the whole minibatch's
        size, and summing the gradients over ranks gives exactly the one-process gradient.
        """
        train, sampling = self.config.train, self.config.sampling
        assert sampling.eta is not None
        first = self.ranks.rank * len(edges)
        order = torch.randperm(len(edges) * self.ranks.world, generator=generator)
        losses, kls, grad_norms = [], [], []
        ratios, new_lps, old_lps, advantages = [], [], [], []
        first_minibatch_deviation = torch.zeros(())
        for number, minibatch in enumerate(order.chunk(train.minibatches)):
            self.optimizer.zero_grad(set_to_none=True)
            mine = minibatch[(minibatch >= first) & (minibatch < first + len(edges))] - first
            micro = train.micro_batch or max(1, len(mine))
            for chunk in mine.split(micro) if len(mine) else ():
                batch = edges.select(chunk)
                batch_cond = cond.select(batch.prompt_index)
                out = self.adapter.predict(
                    batch.parents,
                    batch.steps,
                    self.schedule,
                    batch_cond,
                    sampling.resolved_cfg_scale,
                )
                mean, std = self.schedule.gaussian(batch.parents, out, batch.steps, sampling.eta)
                log_prob = gaussian_log_prob(
                    batch.children, mean[:, None], std[:, None], batch_dims=2
                )  # (P, m)
                edge_loss, ratio = ppo_clip_loss(
                    log_prob, batch.log_prob_old, batch.advantages, train.clip_range, train.adv_clip
                )
                loss = aggregate_children(edge_loss, train.loss_agg).sum() / len(minibatch)
                if self.reference is not None:
                    with torch.no_grad():
                        ref_out = self.adapter.predict(
                            batch.parents,
                            batch.steps,
                            self.schedule,
                            batch_cond,
                            sampling.resolved_cfg_scale,
                            denoiser=self.reference,
                        )
                        ref_mean, _ = self.schedule.gaussian(
                            batch.parents, ref_out, batch.steps, sampling.eta
                        )
                    scale = (
                        std
                        if train.kl_form == "exact"
                        else self.schedule.kl_scale(std, batch.steps)
                    )
                    kl = kl_to_reference(mean, ref_mean, scale)
                    loss = loss + float(train.kl_beta or 0.0) * kl.sum() / len(minibatch)
                    kls.append(kl.detach())
                loss.backward()
                losses.append(float(loss.detach()))
                ratios.append(ratio.detach().flatten())
                advantages.append(batch.advantages.flatten())
                if number == 0:
                    # Before the first optimiser step the policy is the rollout's: any gap
                    # between rollout and training log-probs shows here as ratio != 1.
                    deviation = (ratio.detach() - 1.0).abs().max().cpu()
                    first_minibatch_deviation = torch.maximum(first_minibatch_deviation, deviation)
                new_lps.append(log_prob.detach().flatten())
                old_lps.append(batch.log_prob_old.flatten())
            all_reduce_gradients(self.parameters)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                clip_targets(self.optimizer, self.parameters), train.max_grad_norm
            )
            grad_norms.append(float(grad_norm))
            self.optimizer.step()
            # Free the gradients now: otherwise they stay allocated through the next rollout.
            self.optimizer.zero_grad(set_to_none=True)
        # The epoch's statistics, not this rank's: gather the per-edge values, sum the losses.
        ratio, new_lp, old_lp = (all_gather_cat(torch.cat(v)) for v in (ratios, new_lps, old_lps))
        metrics = ratio_stats(ratio, new_lp, old_lp, train.clip_range)
        metrics["loss"] = sum_over_ranks(sum(losses)) / train.minibatches
        metrics["grad_norm"] = sum(grad_norms) / len(grad_norms)
        metrics["trained_edges"] = float(ratio.numel())
        all_advantages = all_gather_cat(torch.cat(advantages))
        metrics["check/adv_clipped"] = float((all_advantages.abs() > train.adv_clip).float().mean())
        metrics["check/ratio_dev_first_minibatch"] = float(
            all_gather_cat(first_minibatch_deviation.reshape(1)).max()
        )
        metrics["check/clip_fraction"] = metrics["clip_fraction"]
        if self.reference is not None:
            metrics["kl"] = float(all_gather_cat(torch.cat(kls)).mean())
        return metrics

    # -- galleries -----------------------------------------------------------------------------

    @torch.no_grad()
    def sample_gallery(self, epoch: int) -> dict[str, float]:
        """ODE samples of the evaluation prompts from the same noise every time."""
        self.adapter.denoiser.eval()
        generator = torch.Generator().manual_seed(
            stream_seed(self.config.seed, 0, GALLERY_NOISE_STREAM)
        )
        initial = torch.randn(
            (len(self.gallery_prompts), *self.adapter.latent_shape), generator=generator
        )
        latents = sample_ode(
            self.adapter,
            self.schedule,
            self.adapter.encode_prompts(self.gallery_prompts),
            initial,
            self.config.sampling.resolved_cfg_scale,
            self.config.sampling.max_batch,
        )
        images = self.adapter.decode(latents)
        rewards = score_images(self.rewards, images, self.gallery_prompts)
        self.callbacks.on_samples(SampleBatch(epoch, list(self.gallery_prompts), images, rewards))
        means = {name: float(r.mean()) for name, r in rewards.items()}
        return {
            **{f"eval/{name}_mean": value for name, value in means.items()},
            "eval/reward_mean": sum(self.reward_weights[n] * v for n, v in means.items()),
            "watch/diversity": gallery_diversity(images),
        }
