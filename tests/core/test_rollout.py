"""Rollouts on the tiny random model (docs/TREEGRPO.md §3, §4 and §8).

The batched, level-by-level tree rollout must equal the node-by-node reference given the same
noises; its evaluation counts must match the section-3 formula; a stored rollout re-evaluated
under the same policy must give ratio 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
import torch

from treegrpo.advantages import backup_mean
from treegrpo.edges import flat_edges, tree_edges
from treegrpo.models.base import Conditioning
from treegrpo.models.tiny import TinyAdapter
from treegrpo.rollout import (
    FlatRollout,
    TreeRollout,
    draw_flat_noise,
    draw_tree_noise,
    rollout_flat,
    rollout_tree_node_by_node,
    rollout_trees,
)
from treegrpo.schedules import Schedule
from treegrpo.stepping import gaussian_log_prob
from treegrpo.tree import TreeShape, model_evaluations

PROMPTS = ["a bright square", "a dark circle"]
STEPS = 6
ETA = {"flow": 0.7, "epsilon": 1.0}
FAMILIES = ["flow", "epsilon"]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # The tiny model's tensors are small; with two intra-op threads on a busy 2-core machine
    # (pytest -n 2) this module runs ~10x slower from oversubscription than on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def adapter(family: str) -> TinyAdapter:
    return TinyAdapter(family, image_size=8, width=16)  # type: ignore[arg-type]


def grow(
    adapter: TinyAdapter,
    shape: TreeShape,
    cfg_scale: float = 2.0,
    max_batch: int = 0,
    seed: int = 0,
    record: bool = False,
) -> tuple[TreeRollout, Schedule, Conditioning]:
    schedule = adapter.make_schedule(shape.steps)
    cond = adapter.encode_prompts(PROMPTS)
    noise = draw_tree_noise(
        len(PROMPTS), shape, adapter.latent_shape, torch.Generator().manual_seed(seed)
    )
    rollout = rollout_trees(
        adapter,
        schedule,
        PROMPTS,
        cond,
        shape,
        noise,
        cfg_scale,
        ETA[adapter.family],
        max_batch=max_batch,
        record=record,
    )
    return rollout, schedule, cond


def count_denoised_rows(adapter: TinyAdapter) -> tuple[list[int], Callable[[], None]]:
    """Record the batch size of every raw denoiser call; returns (rows, restore)."""
    rows: list[int] = []
    original = adapter.denoise

    def counting(x, timesteps, cond, denoiser=None):  # type: ignore[no-untyped-def]
        rows.append(x.shape[0])
        return original(x, timesteps, cond, denoiser)

    adapter.denoise = counting  # type: ignore[method-assign]

    def restore() -> None:
        del adapter.denoise

    return rows, restore


# -- batched vs node-by-node --------------------------------------------------------------------


@pytest.mark.parametrize(("k", "d", "start"), [(2, 2, 0), (2, 2, 3), (3, 2, 1), (2, 3, 2)], ids=str)
def test_batched_rollout_equals_node_by_node(
    adapter: TinyAdapter, k: int, d: int, start: int
) -> None:
    shape = TreeShape(k, d, STEPS, start)
    schedule = adapter.make_schedule(STEPS)
    cond = adapter.encode_prompts(PROMPTS)
    noise = draw_tree_noise(
        len(PROMPTS), shape, adapter.latent_shape, torch.Generator().manual_seed(1)
    )
    eta = ETA[adapter.family]
    batched = rollout_trees(adapter, schedule, PROMPTS, cond, shape, noise, 2.0, eta)
    naive = rollout_tree_node_by_node(adapter, schedule, PROMPTS, cond, shape, noise, 2.0, eta)

    assert batched.leaves.shape == (2, k**d, *adapter.latent_shape)
    torch.testing.assert_close(batched.leaves, naive.leaves, rtol=1e-5, atol=1e-5)
    for step in range(shape.window_start, shape.window_end + 1):
        assert batched.states[step].shape == (2, shape.width(step), *adapter.latent_shape)
        torch.testing.assert_close(batched.states[step], naive.states[step], rtol=1e-5, atol=1e-5)
    assert (
        sorted(batched.log_probs)
        == sorted(naive.log_probs)
        == list(range(start + 1, start + d + 1))
    )
    for step, log_prob in naive.log_probs.items():
        assert batched.log_probs[step].shape == (2, shape.width(step))
        assert torch.isfinite(batched.log_probs[step]).all()
        torch.testing.assert_close(batched.log_probs[step], log_prob, rtol=1e-5, atol=1e-5)
    # Same evaluations; the reference spends one call per node, the batched path one per step.
    assert naive.model_evals == batched.model_evals == 2 * model_evaluations(k, d, STEPS, start)
    assert naive.model_calls == naive.model_evals
    assert batched.model_calls == STEPS


def test_children_of_a_node_share_mean_and_differ_by_noise(adapter: TinyAdapter) -> None:
    # Siblings come from one Gaussian: child_c - child_c' = std * (noise_c - noise_c').
    shape = TreeShape(3, 1, STEPS, 2)
    rollout, schedule, cond = grow(adapter, shape)
    parents = rollout.states[2].reshape(2, *adapter.latent_shape)  # (trees, C, H, W)
    out = adapter.predict(parents, 2, schedule, cond, 2.0)
    mean, std = schedule.gaussian(parents, out, 2, ETA[adapter.family])
    noise = draw_tree_noise(2, shape, adapter.latent_shape, torch.Generator().manual_seed(0))
    expected = mean[:, None] + std[:, None] * noise.window[0]  # (trees, k, C, H, W)
    torch.testing.assert_close(rollout.states[3], expected, rtol=1e-5, atol=1e-5)


def test_record_keeps_every_state_and_the_same_result(adapter: TinyAdapter) -> None:
    shape = TreeShape(2, 2, STEPS, 1)
    plain, _, _ = grow(adapter, shape)
    recorded, _, _ = grow(adapter, shape, record=True)
    assert sorted(recorded.states) == list(range(STEPS + 1))
    assert sorted(recorded.x0) == list(range(STEPS + 1))
    for step in range(STEPS + 1):
        assert recorded.states[step].shape[:2] == (2, shape.width(step))
        assert recorded.x0[step].shape == recorded.states[step].shape
    torch.testing.assert_close(recorded.leaves, plain.leaves, rtol=0, atol=0)


# -- counts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [0, 2, 4])
def test_model_evals_match_the_formula(adapter: TinyAdapter, start: int) -> None:
    # k = 2, d = 2, T = 6, 2 trees: s + 3 + 4 (6 - s - 2) per tree -> s=0: 19, s=2: 13, s=4: 7
    shape = TreeShape(2, 2, STEPS, start)
    rollout, _, _ = grow(adapter, shape)
    per_tree = {0: 19, 2: 13, 4: 7}[start]
    assert model_evaluations(2, 2, STEPS, start) == per_tree
    assert rollout.model_evals == 2 * per_tree
    assert rollout.model_calls == STEPS  # max_batch = 0: one call per step


@pytest.mark.parametrize(
    ("cfg_scale", "max_batch", "states_per_call"),
    [(2.0, 3, 1), (2.0, 5, 2), (2.0, 8, 4), (1.0, 3, 3)],
)
def test_model_calls_split_by_max_batch(
    adapter: TinyAdapter, cfg_scale: float, max_batch: int, states_per_call: int
) -> None:
    # With CFG each state takes 2 rows, so max_batch rows hold max_batch // 2 states.
    # k = 2, d = 2, s = 1, 2 trees: states per step 2, 2, 4, 8, 8, 8.
    shape = TreeShape(2, 2, STEPS, 1)
    per_step = [2 * shape.width(step) for step in range(STEPS)]
    assert per_step == [2, 2, 4, 8, 8, 8]
    rows, restore = count_denoised_rows(adapter)
    try:
        rollout, _, _ = grow(adapter, shape, cfg_scale=cfg_scale, max_batch=max_batch)
    finally:
        restore()
    expected_calls = sum(math.ceil(n / states_per_call) for n in per_step)
    assert rollout.model_calls == expected_calls > STEPS
    assert len(rows) == expected_calls
    rows_per_state = 1 if cfg_scale == 1.0 else 2
    assert max(rows) <= max_batch
    assert sum(rows) == rows_per_state * rollout.model_evals == rows_per_state * sum(per_step)
    # chunking does not change the result
    unchunked, _, _ = grow(adapter, shape, cfg_scale=cfg_scale)
    torch.testing.assert_close(rollout.leaves, unchunked.leaves, rtol=1e-5, atol=1e-5)


def test_cfg_one_takes_one_forward_row_per_state(adapter: TinyAdapter) -> None:
    shape = TreeShape(2, 2, STEPS, 0)
    for cfg_scale, rows_per_state in ((1.0, 1), (2.0, 2)):
        rows, restore = count_denoised_rows(adapter)
        try:
            grow(adapter, shape, cfg_scale=cfg_scale)
        finally:
            restore()
        assert len(rows) == STEPS
        assert sum(rows) == rows_per_state * 2 * model_evaluations(2, 2, STEPS, 0)


# -- on-policy re-evaluation --------------------------------------------------------------------


@pytest.mark.parametrize("start", [0, 3])
def test_reevaluating_a_tree_on_policy_gives_ratio_one(adapter: TinyAdapter, start: int) -> None:
    shape = TreeShape(3, 2, STEPS, start)
    rollout, schedule, cond = grow(adapter, shape, cfg_scale=2.0)
    eta = ETA[adapter.family]
    # 1. Level by level, as the rollout stepped.
    for level in range(shape.depth):
        step = start + level
        parents = rollout.states[step]  # (trees, width, C, H, W)
        width = parents.shape[1]
        flat = parents.reshape(-1, *adapter.latent_shape)
        out = adapter.predict(
            flat, step, schedule, cond.select(torch.arange(2).repeat_interleave(width)), 2.0
        )
        mean, std = schedule.gaussian(flat, out, step, eta)
        children = rollout.states[step + 1].reshape(2 * width, 3, *adapter.latent_shape)
        log_prob = gaussian_log_prob(children, mean[:, None], std[:, None], batch_dims=2)
        old = rollout.log_probs[step + 1].reshape(2 * width, 3)
        ratio = torch.exp(log_prob - old)
        torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=1e-5)
    # 2. As the trainer does: all window edges in one batch with per-row steps.
    edges = tree_edges(rollout, backup_mean(torch.zeros(2, 9), 3))
    assert len(edges) == 2 * (1 + 3)
    out = adapter.predict(
        edges.parents, edges.steps, schedule, cond.select(edges.prompt_index), 2.0
    )
    mean, std = schedule.gaussian(edges.parents, out, edges.steps, eta)
    log_prob = gaussian_log_prob(edges.children, mean[:, None], std[:, None], batch_dims=2)
    ratio = torch.exp(log_prob - edges.log_prob_old)
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=1e-5)


def test_reevaluating_flat_trajectories_on_policy_gives_ratio_one(adapter: TinyAdapter) -> None:
    rollout, schedule, cond = run_flat(adapter, torch.tensor([True] * STEPS))
    eta = ETA[adapter.family]
    edges = flat_edges(rollout, torch.zeros(6), torch.arange(STEPS).expand(6, STEPS))
    out = adapter.predict(
        edges.parents, edges.steps, schedule, cond.select(edges.prompt_index), 2.0
    )
    mean, std = schedule.gaussian(edges.parents, out, edges.steps, eta)
    log_prob = gaussian_log_prob(edges.children, mean[:, None], std[:, None], batch_dims=2)
    ratio = torch.exp(log_prob - edges.log_prob_old)
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=1e-5)


# -- flat trajectories --------------------------------------------------------------------------


def run_flat(
    adapter: TinyAdapter, sde_steps: torch.Tensor, cfg_scale: float = 2.0, group_size: int = 3
) -> tuple[FlatRollout, Schedule, Conditioning]:
    schedule = adapter.make_schedule(STEPS)
    cond = adapter.encode_prompts(PROMPTS)
    noise = draw_flat_noise(
        len(PROMPTS), group_size, STEPS, adapter.latent_shape, torch.Generator().manual_seed(2)
    )
    rollout = rollout_flat(
        adapter,
        schedule,
        PROMPTS,
        cond,
        group_size,
        sde_steps,
        noise,
        cfg_scale,
        ETA[adapter.family],
    )
    return rollout, schedule, cond


def test_flat_rollout_log_probs_and_shared_initial_state(adapter: TinyAdapter) -> None:
    sde = torch.tensor([False, True, True, False, True, False])
    rollout, _, _ = run_flat(adapter, sde)
    assert rollout.states.shape == (6, STEPS + 1, *adapter.latent_shape)
    assert rollout.log_probs.shape == (6, STEPS)
    assert torch.isnan(rollout.log_probs[:, ~sde]).all()
    assert torch.isfinite(rollout.log_probs[:, sde]).all()
    initial = rollout.states[:, 0]  # (prompts * G, C, H, W); rows 0-2 prompt 0, rows 3-5 prompt 1
    for row in (1, 2):
        torch.testing.assert_close(initial[row], initial[0], rtol=0, atol=0)
        torch.testing.assert_close(initial[3 + row], initial[3], rtol=0, atol=0)
    assert not torch.equal(initial[0], initial[3])
    # Trajectories of a group share the prefix up to the first SDE step, then split.
    torch.testing.assert_close(rollout.states[1, 1], rollout.states[0, 1], rtol=0, atol=0)
    assert not torch.equal(rollout.states[1, 2], rollout.states[0, 2])


def test_flat_rollout_without_sde_steps_is_deterministic(adapter: TinyAdapter) -> None:
    rollout, _, _ = run_flat(adapter, torch.zeros(STEPS, dtype=torch.bool))
    assert torch.isnan(rollout.log_probs).all()
    torch.testing.assert_close(rollout.leaves[1], rollout.leaves[0], rtol=0, atol=0)


def test_flat_cfg_one_takes_one_forward_row_per_state(adapter: TinyAdapter) -> None:
    sde = torch.ones(STEPS, dtype=torch.bool)
    for cfg_scale, rows_per_state in ((1.0, 1), (2.0, 2)):
        rows, restore = count_denoised_rows(adapter)
        try:
            rollout, _, _ = run_flat(adapter, sde, cfg_scale=cfg_scale)
        finally:
            restore()
        assert rollout.model_calls == len(rows) == STEPS
        assert rollout.model_evals == 6 * STEPS
        assert rows == [rows_per_state * 6] * STEPS
