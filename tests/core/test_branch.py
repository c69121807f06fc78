"""Branching from a stored node (treegrpo/branch.py) and loading a checkpointed policy.

A regrowth from a node, given the noises the tree drew for that node's children, must reproduce
the tree's children and leaves: the branch path and the batched rollout are the same maths.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from treegrpo.branch import advantages_against, branch_nodes, load_latent, regrow, save_latent
from treegrpo.models.tiny import TinyAdapter
from treegrpo.rollout import draw_tree_noise, rollout_trees
from treegrpo.stepping import gaussian_log_prob
from treegrpo.tree import TreeShape
from treegrpo.tree_record import build_tree_records
from treegrpo.tree_scoring import tree_advantages

STEPS = 5
ETA = {"flow": 0.7, "epsilon": 1.0}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("family", ["flow", "epsilon"])
def test_regrow_reproduces_the_tree_from_its_own_noises(family: str) -> None:
    adapter = TinyAdapter(family, image_size=8, width=16)  # type: ignore[arg-type]
    schedule = adapter.make_schedule(STEPS)
    shape = TreeShape(k=3, depth=1, steps=STEPS, window_start=2)
    noise = draw_tree_noise(1, shape, adapter.latent_shape, torch.Generator().manual_seed(0))
    cond = adapter.encode_prompts(["a bright square"])
    with torch.no_grad():
        tree = rollout_trees(
            adapter,
            schedule,
            ["a bright square"],
            cond,
            shape,
            noise,
            2.0,
            ETA[family],
            record=True,
        )
    node_latent = tree.states[shape.window_start][0, 0]  # (C, H, W) the branch point

    grown = regrow(
        adapter, schedule, cond, node_latent, shape.window_start, noise.window[0][0], 2.0,
        ETA[family],
    )  # fmt: skip

    assert grown.states.shape == (3, STEPS - shape.window_start, *adapter.latent_shape)
    children = tree.states[shape.window_start + 1][0]  # (k, C, H, W)
    torch.testing.assert_close(grown.states[:, 0], children, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grown.leaves, tree.leaves[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        grown.log_probs, tree.log_probs[shape.window_start + 1][0], atol=1e-5, rtol=1e-5
    )
    # One evaluation at the node, then one per child per remaining step.
    assert grown.model_evals == 1 + 3 * (STEPS - shape.window_start - 1)


def test_regrow_log_probs_follow_the_gaussian_and_refuse_a_leaf() -> None:
    adapter = TinyAdapter("flow", image_size=8, width=16)
    schedule = adapter.make_schedule(STEPS)
    cond = adapter.encode_prompts(["a dark square"])
    latent = torch.randn(adapter.latent_shape, generator=torch.Generator().manual_seed(1))
    noise = torch.randn((2, *adapter.latent_shape), generator=torch.Generator().manual_seed(2))
    grown = regrow(adapter, schedule, cond, latent, STEPS - 1, noise, 1.0, 0.7)
    # The last step: the children are the leaves, and each log-prob is the Gaussian's.
    out = adapter.predict(latent[None], STEPS - 1, schedule, cond, 1.0)
    mean, std = schedule.gaussian(latent[None], out, STEPS - 1, 0.7)
    expected = gaussian_log_prob(mean + std * noise, mean, std)
    torch.testing.assert_close(grown.log_probs, expected)
    assert grown.states.shape[1] == 1
    torch.testing.assert_close(grown.x0[:, -1], grown.leaves)
    with pytest.raises(ValueError, match="final image"):
        regrow(adapter, schedule, cond, latent, STEPS, noise, 1.0, 0.7)


def test_branch_nodes_lay_the_chains_out_as_tree_nodes() -> None:
    adapter = TinyAdapter("flow", image_size=8, width=16)
    schedule = adapter.make_schedule(STEPS)
    cond = adapter.encode_prompts(["a dark square"])
    latent = torch.randn(adapter.latent_shape, generator=torch.Generator().manual_seed(1))
    noise = torch.randn((2, *adapter.latent_shape), generator=torch.Generator().manual_seed(2))
    grown = regrow(adapter, schedule, cond, latent, STEPS - 3, noise, 1.0, 0.7)  # 3 positions
    images = grown.x0 + 1.0  # stands in for the decoded images
    scores, advantages = {"r": torch.tensor([0.25, 0.75])}, torch.tensor([-1.0, 1.0])
    nodes = branch_nodes(grown, schedule, images, scores, advantages, {"r": 2.0}, depth=4)
    # Level by level: children 0, 1 at step T - 2; then 2, 3; the leaves 4, 5 at step T.
    assert [n.id for n in nodes] == [0, 1, 2, 3, 4, 5]
    assert [n.parent_id for n in nodes] == [None, None, 0, 1, 2, 3]
    assert [n.step_index for n in nodes] == [STEPS - 2] * 2 + [STEPS - 1] * 2 + [STEPS] * 2
    assert [n.is_leaf for n in nodes] == [False] * 4 + [True] * 2
    assert {n.depth for n in nodes} == {4}
    assert [n.log_prob for n in nodes[:2]] == grown.log_probs.tolist()
    assert all(n.log_prob is None for n in nodes[2:])
    assert [n.advantage for n in nodes] == [-1.0, 1.0, None, None, -1.0, 1.0]
    assert [n.rewards for n in nodes[4:]] == [{"r": 0.25}, {"r": 0.75}]
    assert [n.reward for n in nodes] == [None] * 4 + [0.5, 1.5]
    assert nodes[3].t == float(schedule.t[STEPS - 1])
    assert nodes[3].image is not None and torch.equal(nodes[3].image, images[1, 1])
    assert nodes[5].latent is not None and torch.equal(nodes[5].latent, grown.leaves[1])


def test_advantages_against_the_tree_leaves() -> None:
    # Tree leaves (1, 3): mean 2, population std 1. New leaves 2 and 4 -> 0 and 2.
    reference = {"r": torch.tensor([1.0, 3.0])}
    new = {"r": torch.tensor([2.0, 4.0])}
    torch.testing.assert_close(
        advantages_against(reference, new, {"r": 1.0}), torch.tensor([0.0, 2.0])
    )
    # Without a reference the new leaves are their own group: (2, 4) -> (-1, 1), weight 0.5.
    torch.testing.assert_close(advantages_against({}, new, {"r": 0.5}), torch.tensor([-0.5, 0.5]))
    with pytest.raises(ValueError, match="NaN"):
        advantages_against(reference, {"r": torch.tensor([float("nan"), 1.0])}, {"r": 1.0})


def test_logged_records_keep_every_state_as_a_latent(tmp_path: Path) -> None:
    adapter = TinyAdapter("flow", image_size=8, width=16)
    schedule = adapter.make_schedule(4)
    shape = TreeShape(k=2, depth=2, steps=4, window_start=1)
    noise = draw_tree_noise(1, shape, adapter.latent_shape, torch.Generator().manual_seed(0))
    prompts = ["a gray square"]
    with torch.no_grad():
        rollout = rollout_trees(
            adapter, schedule, prompts, adapter.encode_prompts(prompts), shape, noise, 1.0, 0.7,
            record=True,
        )  # fmt: skip
    rewards = {"brightness": torch.arange(4.0)}
    _, values = tree_advantages(
        rollout, rewards, {"brightness": 1.0}, torch.zeros(1, dtype=torch.long), "mean"
    )
    record = build_tree_records(
        rollout, schedule, "mean", {"brightness": rewards["brightness"][None]},
        {"brightness": 1.0}, values,
    )[0]  # fmt: skip
    offsets = {0: 0, 1: 1, 2: 2, 3: 4, 4: 8}  # first node id of each step
    for node in record.nodes:
        assert node.latent is not None
        block = rollout.states[node.step_index][0]  # (width, C, H, W)
        assert torch.equal(node.latent, block[node.id - offsets[node.step_index]])
    path = tmp_path / "node.safetensors"
    save_latent(path, record.nodes[3].latent)
    assert torch.equal(load_latent(path), record.nodes[3].latent)
    # The compact dtype: the state rounded to bfloat16, restored as the rollout's float32.
    save_latent(path, record.nodes[3].latent, "bfloat16")
    rounded = load_latent(path)
    assert rounded.dtype == torch.float32
    assert torch.equal(rounded, record.nodes[3].latent.to(torch.bfloat16).float())
    with pytest.raises(ValueError, match="'float16' is not one of float32, bfloat16"):
        save_latent(path, record.nodes[3].latent, "float16")


def test_load_policy_from_a_checkpoint(tmp_path: Path) -> None:
    from treegrpo.checkpoint import TrainState, save_checkpoint
    from treegrpo.config import resolve_config
    from treegrpo.policy import load_policy, nearest_checkpoint

    config = resolve_config("tiny-treegrpo")
    trained = TinyAdapter("flow")
    with torch.no_grad():
        for param in trained.denoiser.parameters():
            param.add_(1.0)
    optimizer = torch.optim.AdamW(trained.denoiser.parameters())
    root = tmp_path / "checkpoints"
    for epoch in (2, 6):
        save_checkpoint(
            root, trained.denoiser, optimizer, TrainState(epoch=epoch), config.to_dict()
        )

    assert nearest_checkpoint(root, 3) == (2, root / "epoch-000002")
    assert nearest_checkpoint(root, 4) == (2, root / "epoch-000002")  # a tie goes to the earlier
    assert nearest_checkpoint(root, 5) == (6, root / "epoch-000006")
    assert nearest_checkpoint(tmp_path / "none", 5) is None

    policy = load_policy(config, root / "epoch-000006")
    base = load_policy(config)
    for name, value in trained.denoiser.state_dict().items():
        assert torch.equal(policy.denoiser.state_dict()[name], value)
    assert not all(
        torch.equal(base.denoiser.state_dict()[n], v)
        for n, v in trained.denoiser.state_dict().items()
    )
