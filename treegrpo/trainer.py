"""One training loop for TreeGRPO and the flat baselines (DanceGRPO, Flow-GRPO, MixGRPO).

Per epoch: pick prompts, roll out (trees or flat groups) without gradients, score the final
images, turn rewards into per-edge advantages, then take `train.minibatches` PPO-clipped
optimizer steps over the SDE edges. Everything random in an epoch derives from (seed, epoch), so a
run resumed from a checkpoint replays exactly what an uninterrupted run would have done.

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

from treegrpo.advantages import combine_rewards
from treegrpo.callbacks import Callback, CallbackList, RunInfo, SampleBatch
from treegrpo.checkpoint import TrainState, load_checkpoint, save_checkpoint
from treegrpo.config import RunConfig
from treegrpo.edges import EdgeBatch, flat_edges, tree_edges
from treegrpo.losses import aggregate_children, kl_to_reference, ppo_clip_loss, ratio_stats
from treegrpo.models.base import Conditioning, ModelAdapter
from treegrpo.prompts import resolve_prompts
from treegrpo.rewards.registry import RewardFn
from treegrpo.rollout import (
    TreeRollout,
    draw_flat_noise,
    draw_tree_noise,
    rollout_flat,
    rollout_trees,
    sample_ode,
)
from treegrpo.stepping import gaussian_log_prob
from treegrpo.tree import TreeShape, model_evaluations, trained_edge_count
from treegrpo.tree_record import build_tree_records
from treegrpo.tree_scoring import decode_steps, tree_advantages
from treegrpo.windows import window_start

EVAL_PROMPTS_DEFAULT = 8
# Galleries cycle their prompts (each time with new noise) up to this many images, so the eval
# reward of a small prompt set is an average over enough samples to compare epochs.
GALLERY_MIN_IMAGES = 32
GALLERY_NOISE_STREAM = 99


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent, reproducible seeds per (run seed, epoch, purpose)."""
    return (seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**62)


@dataclass
class EpochPlan:
    prompts: list[str]
    groups: Tensor  # (prompts,) id of each prompt, equal prompts share one
    window_start: int
    generator: torch.Generator
    rng: random.Random


class Trainer:
    def __init__(
        self,
        config: RunConfig,
        adapter: ModelAdapter,
        rewards: dict[str, RewardFn],
        callbacks: Sequence[Callback] = (),
        checkpoint_root: Path | None = None,
    ) -> None:
        self.config = config
        self.adapter = adapter
        self.rewards = rewards
        self.reward_weights = config.reward_weights
        missing = set(self.reward_weights) - set(rewards)
        if missing:
            raise ValueError(f"no scoring function for reward(s) {sorted(missing)}")
        self.callbacks = CallbackList(callbacks)
        self.checkpoint_root = checkpoint_root
        self.schedule = adapter.make_schedule(config.sampling.steps)
        self.prompts = list(resolve_prompts(config.prompts))
        if config.eval_prompts is not None:
            self.eval_prompts = list(resolve_prompts(config.eval_prompts))
        else:
            self.eval_prompts = list(resolve_prompts(config.prompts))[:EVAL_PROMPTS_DEFAULT]
        repeats = -(-GALLERY_MIN_IMAGES // len(self.eval_prompts))
        self.gallery_prompts = self.eval_prompts * repeats
        if config.train.lora_rank:
            adapter.enable_lora(config.train.lora_rank)
        if config.train.grad_checkpointing:
            adapter.enable_gradient_checkpointing()
        self.parameters = adapter.trainable_parameters()
        if not self.parameters:
            raise ValueError(f"model {adapter.name!r} has no trainable parameters")
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=config.train.lr, weight_decay=config.train.weight_decay
        )
        # The reference policy for the optional KL is the model as loaded, before any update.
        self.reference = None
        if config.train.kl_beta > 0:
            self.reference = copy.deepcopy(adapter.denoiser).requires_grad_(False).eval()
        self.state = TrainState()

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
        if self.state.epoch == 0 and config.sample_every:
            self.callbacks.on_epoch_end(0, self.sample_gallery(0))
        last_saved = -1
        status = "completed"
        while self.state.epoch < config.epochs:
            if self.callbacks.should_stop():
                status = "stopped"
                break
            metrics = self.train_epoch(self.state.epoch)
            if metrics is None:  # stop requested between rollout and update
                status = "stopped"
                break
            epoch = self.state.epoch
            if config.sample_every and epoch % config.sample_every == 0:
                metrics.update(self.sample_gallery(epoch))
            self.callbacks.on_epoch_end(epoch, metrics)
            if config.checkpoint_every and epoch % config.checkpoint_every == 0:
                self.save()
                last_saved = epoch
        if last_saved != self.state.epoch:
            self.save()
        self.callbacks.on_end(status, self.state.epoch)
        return status

    def save(self) -> Path | None:
        if self.checkpoint_root is None:
            return None
        path = save_checkpoint(
            self.checkpoint_root,
            self.adapter.denoiser,
            self.optimizer,
            self.state,
            self.config.to_dict(),
        )
        self.callbacks.on_checkpoint(self.state.epoch, path)
        return path

    def run_info(self) -> RunInfo:
        config, prompts = self.config, self.config.prompts_per_epoch
        steps = config.sampling.steps
        if config.algorithm == "treegrpo":
            k, d = config.tree.k, config.tree.depth
            images = prompts * k**d
            edges = prompts * trained_edge_count(k, d)
            evals = prompts * model_evaluations(k, d, steps, 0)
        else:
            images = prompts * config.flat.group_size
            edges = images * len(self.flat_train_steps(random.Random(0), 0))
            evals = images * steps
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
        start = window_start(config.tree, config.sampling.steps, config.window_width, epoch, rng)
        return EpochPlan(prompts, groups, start, generator, rng)

    def train_epoch(self, epoch: int) -> dict[str, float] | None:
        """Roll out, score, update. Returns the epoch's metrics, or None if asked to stop."""
        config = self.config
        plan = self.plan_epoch(epoch)
        started = time.perf_counter()
        self.adapter.denoiser.eval()
        cond = self.adapter.encode_prompts(plan.prompts)
        with torch.no_grad():
            if config.algorithm == "treegrpo":
                edges, metrics, images = self._tree_epoch(plan, cond, epoch)
            else:
                edges, metrics, images = self._flat_epoch(plan, cond)
        rollout_seconds = time.perf_counter() - started
        if self.callbacks.should_stop():
            return None
        self.adapter.denoiser.train()
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
                "time/rollout": rollout_seconds,
                "time/update": epoch_seconds - rollout_seconds,
                "time/epoch": epoch_seconds,
                "wall_clock": self.state.wall_clock,
            }
        )
        return metrics

    def _score(self, latents: Tensor, prompts: list[str]) -> dict[str, Tensor]:
        images = self.adapter.decode(latents)
        return {name: self.rewards[name](images, prompts).float().cpu() for name in self.rewards}

    def _reward_metrics(self, rewards: dict[str, Tensor]) -> dict[str, float]:
        metrics: dict[str, float] = {}
        total = 0.0
        for name, values in rewards.items():
            metrics[f"reward/{name}_mean"] = float(values.mean())
            metrics[f"reward/{name}_std"] = float(values.std(unbiased=False))
            total += self.reward_weights[name] * float(values.mean())
        metrics["reward_mean"] = total
        return metrics

    def _tree_epoch(
        self, plan: EpochPlan, cond: Conditioning, epoch: int
    ) -> tuple[EdgeBatch, dict[str, float], int]:
        config = self.config
        shape = TreeShape(
            config.tree.k, config.tree.depth, config.sampling.steps, plan.window_start
        )
        trees = len(plan.prompts)
        noise = draw_tree_noise(trees, shape, self.adapter.latent_shape, plan.generator)
        log_tree = bool(config.log_tree_every) and epoch % config.log_tree_every == 0
        rollout = rollout_trees(
            self.adapter,
            self.schedule,
            plan.prompts,
            cond,
            shape,
            noise,
            config.sampling.cfg_scale,
            config.sampling.eta,
            config.sampling.max_batch,
            record=log_tree,
        )
        self.state.model_evals += rollout.model_evals
        leaves = rollout.leaves.reshape(-1, *rollout.leaves.shape[2:])  # (trees * k^d, C, H, W)
        leaf_prompts = [p for p in plan.prompts for _ in range(shape.width(shape.steps))]
        rewards = self._score(leaves, leaf_prompts)
        _, values = tree_advantages(
            rollout, rewards, self.reward_weights, plan.groups, config.tree.backup
        )
        edges = tree_edges(rollout, values)
        assert len(edges) * shape.k == trees * trained_edge_count(shape.k, shape.depth)
        metrics = self._reward_metrics(rewards)
        for depth, block in enumerate(values):
            metrics[f"advantage/depth{depth}_mean"] = float(block.mean())
            metrics[f"advantage/depth{depth}_std"] = float(block.std(unbiased=False))
        if log_tree:
            self._log_trees(rollout, rewards, values, epoch + 1)
        return edges, metrics, leaves.shape[0]

    def _log_trees(
        self, rollout: TreeRollout, rewards: dict[str, Tensor], values: list[Tensor], epoch: int
    ) -> None:
        images = decode_steps(self.adapter, rollout.x0)
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
            record.meta = {
                "model": self.config.model,
                "epoch": epoch,
                "seed": self.config.seed,
                "reward": self.config.to_dict()["reward"],
            }
            self.callbacks.on_tree(epoch, record)

    def flat_train_steps(self, rng: random.Random, window_start_step: int) -> list[int]:
        """Which steps the flat baselines train this epoch."""
        config, steps = self.config, self.config.sampling.steps
        if config.algorithm == "dancegrpo":
            count = max(1, round(config.flat.timestep_fraction * steps))
            return sorted(rng.sample(range(steps), count))
        if config.algorithm == "flowgrpo":
            return list(range(max(1, steps - 1)))
        return list(range(window_start_step, window_start_step + config.flat.window))

    def _flat_epoch(
        self, plan: EpochPlan, cond: Conditioning
    ) -> tuple[EdgeBatch, dict[str, float], int]:
        config = self.config
        steps, group = config.sampling.steps, config.flat.group_size
        sde = torch.ones(steps, dtype=torch.bool)
        if config.algorithm == "mixgrpo":
            sde = torch.zeros(steps, dtype=torch.bool)
            sde[plan.window_start : plan.window_start + config.flat.window] = True
        train_steps = self.flat_train_steps(plan.rng, plan.window_start)
        noise = draw_flat_noise(
            len(plan.prompts), group, steps, self.adapter.latent_shape, plan.generator
        )
        rollout = rollout_flat(
            self.adapter,
            self.schedule,
            plan.prompts,
            cond,
            group,
            sde,
            noise,
            config.sampling.cfg_scale,
            config.sampling.eta,
            config.sampling.max_batch,
        )
        self.state.model_evals += rollout.model_evals
        row_prompts = [p for p in plan.prompts for _ in range(group)]
        rewards = self._score(rollout.leaves, row_prompts)
        row_groups = plan.groups.repeat_interleave(group)
        advantages = combine_rewards(rewards, self.reward_weights, row_groups)
        edges = flat_edges(rollout, advantages, train_steps)
        metrics = self._reward_metrics(rewards)
        metrics["advantage/mean"] = float(advantages.mean())
        metrics["advantage/std"] = float(advantages.std(unbiased=False))
        return edges, metrics, rollout.leaves.shape[0]

    # -- policy update -------------------------------------------------------------------------

    def update(
        self, edges: EdgeBatch, cond: Conditioning, generator: torch.Generator
    ) -> dict[str, float]:
        """PPO-clipped steps over the edges (TREEGRPO.md section 6), `train.minibatches` of them."""
        train, sampling = self.config.train, self.config.sampling
        order = torch.randperm(len(edges), generator=generator)
        losses, kls, grad_norms = [], [], []
        ratios, new_lps, old_lps = [], [], []
        for minibatch in order.chunk(train.minibatches):
            self.optimizer.zero_grad(set_to_none=True)
            micro = train.micro_batch or len(minibatch)
            for chunk in minibatch.split(micro):
                batch = edges.select(chunk)
                batch_cond = cond.select(batch.prompt_index)
                out = self.adapter.predict(
                    batch.parents, batch.steps, self.schedule, batch_cond, sampling.cfg_scale
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
                            sampling.cfg_scale,
                            denoiser=self.reference,
                        )
                        ref_mean, _ = self.schedule.gaussian(
                            batch.parents, ref_out, batch.steps, sampling.eta
                        )
                    kl = kl_to_reference(mean, ref_mean, std)
                    loss = loss + train.kl_beta * kl.sum() / len(minibatch)
                    kls.append(kl.detach())
                loss.backward()
                losses.append(float(loss.detach()))
                ratios.append(ratio.detach().flatten())
                new_lps.append(log_prob.detach().flatten())
                old_lps.append(batch.log_prob_old.flatten())
            grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, train.max_grad_norm)
            grad_norms.append(float(grad_norm))
            self.optimizer.step()
            # Free the gradients now: otherwise they stay allocated through the next rollout.
            self.optimizer.zero_grad(set_to_none=True)
        metrics = ratio_stats(
            torch.cat(ratios), torch.cat(new_lps), torch.cat(old_lps), train.clip_range
        )
        metrics["loss"] = sum(losses) / train.minibatches
        metrics["grad_norm"] = sum(grad_norms) / len(grad_norms)
        metrics["trained_edges"] = float(torch.cat(ratios).numel())
        if kls:
            metrics["kl"] = float(torch.cat(kls).mean())
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
            self.config.sampling.cfg_scale,
            self.config.sampling.max_batch,
        )
        images = self.adapter.decode(latents)
        rewards = {
            name: fn(images, self.gallery_prompts).float().cpu()
            for name, fn in self.rewards.items()
        }
        self.callbacks.on_samples(SampleBatch(epoch, list(self.gallery_prompts), images, rewards))
        return {f"eval/{name}_mean": float(r.mean()) for name, r in rewards.items()}
