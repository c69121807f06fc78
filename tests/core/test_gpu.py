"""The same engine on a GPU: batched == node-by-node on CUDA, and a bf16 training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from treegrpo.config import resolve_config
from treegrpo.models.tiny import TinyAdapter
from treegrpo.rewards.registry import load_rewards
from treegrpo.rollout import draw_tree_noise, rollout_tree_node_by_node, rollout_trees
from treegrpo.trainer import Trainer
from treegrpo.tree import TreeShape

pytestmark = pytest.mark.gpu


@torch.no_grad()
def test_batched_rollout_matches_node_by_node_on_cuda() -> None:
    adapter = TinyAdapter("flow", device="cuda")
    schedule = adapter.make_schedule(10)
    shape = TreeShape(3, 3, 10, 1)
    prompts = ["a bright square", "a dark square"]
    cond = adapter.encode_prompts(prompts)
    noise = draw_tree_noise(2, shape, adapter.latent_shape, torch.Generator().manual_seed(0))
    batched = rollout_trees(adapter, schedule, prompts, cond, shape, noise, 4.5, 0.7)
    naive = rollout_tree_node_by_node(adapter, schedule, prompts, cond, shape, noise, 4.5, 0.7)
    torch.testing.assert_close(batched.leaves, naive.leaves, atol=1e-4, rtol=1e-4)
    for step, log_prob in batched.log_probs.items():
        torch.testing.assert_close(log_prob, naive.log_probs[step], atol=1e-4, rtol=1e-4)


def test_bf16_training_on_cuda(tmp_path: Path) -> None:
    config = resolve_config(
        "tiny-treegrpo", assignments=["device=cuda", "dtype=bfloat16", "epochs=2"]
    )
    adapter = TinyAdapter("flow", device="cuda", dtype=torch.bfloat16)
    before = {k: v.clone() for k, v in adapter.denoiser.state_dict().items()}
    metrics: list[dict[str, float]] = []

    from treegrpo.callbacks import Callback

    class Collect(Callback):
        def on_epoch_end(self, epoch: int, values: dict[str, float]) -> None:
            metrics.append(values)

    trainer = Trainer(config, adapter, load_rewards(config.reward_weights), [Collect()], tmp_path)
    assert trainer.run() == "completed"
    assert len(metrics) == 2
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    after = adapter.denoiser.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
