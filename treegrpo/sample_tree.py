"""Grow, score and back up one tree for a prompt: what `treegrpo sample-tree` and the workers'
sample jobs run. Every state is recorded with its predicted clean image."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from treegrpo.algorithms import resolve_for_model
from treegrpo.config import RunConfig
from treegrpo.models.base import ModelAdapter
from treegrpo.rewards.registry import RewardFn
from treegrpo.rollout import draw_tree_noise, rollout_trees
from treegrpo.scoring import Scorer
from treegrpo.tree import TreeShape
from treegrpo.tree_record import TreeRecord, build_tree_records
from treegrpo.tree_scoring import decode_steps, tree_advantages


@torch.no_grad()
def grow_tree(
    adapter: ModelAdapter,
    prompt: str,
    config: RunConfig,
    rewards: dict[str, RewardFn],
    window_start: int,
    metadata: Mapping[str, Any] | None = None,
) -> TreeRecord:
    """One tree with config.tree.k / depth / backup and config.sampling, seeded by config.seed;
    its leaves are scored with the prompt's row `metadata` ({} when None)."""
    config, schedule = resolve_for_model(config, adapter)
    assert config.sampling.eta is not None
    shape = TreeShape(config.tree.k, config.tree.depth, config.sampling.steps, window_start)
    generator = torch.Generator().manual_seed(config.seed)
    noise = draw_tree_noise(1, shape, adapter.latent_shape, generator)
    adapter.denoiser.eval()
    rollout = rollout_trees(
        adapter,
        schedule,
        [prompt],
        adapter.encode_prompts([prompt]),
        shape,
        noise,
        config.sampling.resolved_cfg_scale,
        config.sampling.eta,
        config.sampling.max_batch,
        record=True,
    )
    images = decode_steps(adapter, rollout.x0)  # step -> (1, width, C, H, W)
    leaf_images = images[shape.steps][0]  # (k^d, C, H, W)
    leaf_prompts = [prompt] * leaf_images.shape[0]
    weights = config.reward_weights
    leaf_metadata = [dict(metadata or {}) for _ in leaf_prompts]
    scorer = Scorer(adapter.decode, rewards, weights)
    scores = scorer.score_images(leaf_images, leaf_prompts, leaf_metadata)
    _, values = tree_advantages(
        rollout, scores, weights, torch.zeros(1, dtype=torch.long), config.tree.backup
    )
    record = build_tree_records(
        rollout,
        schedule,
        config.tree.backup,
        {name: s[None] for name, s in scores.items()},
        weights,
        values,
        images,
    )[0]
    record.meta = {
        "model": config.model,
        "seed": config.seed,
        "reward": config.to_dict()["reward"],
        "cfg_scale": config.sampling.resolved_cfg_scale,
        "eta": config.sampling.eta,
    }
    return record
