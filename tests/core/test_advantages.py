"""Leaf z-scores and their backup to internal edges (docs/TREEGRPO.md §5)."""

from __future__ import annotations

import math

import pytest
import torch

from treegrpo.advantages import (
    backup,
    backup_depth_norm,
    backup_logprob_softmax,
    backup_mean,
    combine_rewards,
    global_std_advantages,
    group_zscore,
)


def one_group(n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.long)


# -- group_zscore -------------------------------------------------------------------------------


def test_worked_example_of_section_5() -> None:
    # k = 2, d = 2, rewards (1, 1, 3, 3): mean 2, population std 1 -> leaves (-1, -1, 1, 1);
    # depth 1: mean(-1, -1) = -1, mean(1, 1) = 1; root: mean(-1, 1) = 0.
    leaf = group_zscore(torch.tensor([1.0, 1.0, 3.0, 3.0]), one_group(4))
    torch.testing.assert_close(leaf, torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    values = backup_mean(leaf.reshape(1, 4), k=2)
    assert len(values) == 3
    torch.testing.assert_close(values[2], torch.tensor([[-1.0, -1.0, 1.0, 1.0]]))
    torch.testing.assert_close(values[1], torch.tensor([[-1.0, 1.0]]))
    torch.testing.assert_close(values[0], torch.tensor([[0.0]]))  # (trees, 1)


def test_group_zscore_uses_population_std() -> None:
    # (1, 2, 3, 4): mean 2.5, population var = (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25,
    # std = 1.1180340 -> (-1.5, -0.5, 0.5, 1.5) / 1.1180340 = (-1.3416408, -0.4472136, ...)
    # (torch.std's unbiased std 1.2909944 would give -1.1618950 first.)
    z = group_zscore(torch.tensor([1.0, 2.0, 3.0, 4.0]), one_group(4))
    torch.testing.assert_close(z, torch.tensor([-1.3416408, -0.4472136, 0.4472136, 1.3416408]))


@pytest.mark.parametrize(
    ("value", "n"),
    [(3.0, 4), (0.0, 5), (0.1, 7), (0.7, 27), (0.3, 81)],
    ids=["3.0x4", "0.0x5", "0.1x7", "0.7x27", "0.3x81"],
)
def test_group_zscore_all_equal_rewards_give_zeros(value: float, n: int) -> None:
    # A group whose rewards are all equal carries no signal: advantages must be exactly 0, never
    # NaN, whatever the value (0.7 on 27 leaves is a k = 3, d = 3 tree of identical images).
    z = group_zscore(torch.full((n,), value), one_group(n))
    assert not torch.isnan(z).any()
    torch.testing.assert_close(z, torch.zeros(n), rtol=0, atol=1e-6)


def test_group_zscore_groups_are_independent() -> None:
    # group 0 = (1, 2, 3, 4) as above; group 1 = (10, 30): mean 20, std 10 -> (-1, 1).
    # Groups interleave, so membership (not position) decides.
    values = torch.tensor([1.0, 10.0, 2.0, 3.0, 30.0, 4.0])
    groups = torch.tensor([0, 1, 0, 0, 1, 0])
    z = group_zscore(values, groups)
    torch.testing.assert_close(
        z, torch.tensor([-1.3416408, -1.0, -0.4472136, 0.4472136, 1.0, 1.3416408])
    )
    # Changing group 1 leaves group 0 untouched.
    other = group_zscore(torch.tensor([1.0, -5.0, 2.0, 3.0, 7.0, 4.0]), groups)
    torch.testing.assert_close(other[groups == 0], z[groups == 0])


# -- combine_rewards ----------------------------------------------------------------------------


def test_combine_rewards_normalises_each_reward_then_weights() -> None:
    # a = (1, 2, 3, 4) -> z_a = (-1.3416408, -0.4472136, 0.4472136, 1.3416408)
    # b = (0, 0, 10, 10): mean 5, std 5 -> z_b = (-1, -1, 1, 1)
    # 0.8 z_a + 0.2 z_b = (-1.0733126 - 0.2, -0.3577709 - 0.2, 0.3577709 + 0.2, 1.0733126 + 0.2)
    #                   = (-1.2733126, -0.5577709, 0.5577709, 1.2733126)
    # then Algorithm 1 (lines 11-13) normalises the sum again: population std
    #   sqrt((1.2733126^2 + 0.5577709^2) / 2) = 0.9829632
    #   -> (-1.2953817, -0.5674382, 0.5674382, 1.2953817)
    rewards = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([0.0, 0.0, 10.0, 10.0])}
    summed = combine_rewards(rewards, {"a": 0.8, "b": 0.2}, one_group(4), renormalise=False)
    torch.testing.assert_close(summed, torch.tensor([-1.2733126, -0.5577709, 0.5577709, 1.2733126]))
    out = combine_rewards(rewards, {"a": 0.8, "b": 0.2}, one_group(4))
    torch.testing.assert_close(out, torch.tensor([-1.2953817, -0.5674382, 0.5674382, 1.2953817]))
    # Normalising each reward first makes the result blind to a reward's scale.
    scaled = combine_rewards(
        {"a": rewards["a"], "b": 1000 * rewards["b"]}, {"a": 0.8, "b": 0.2}, one_group(4)
    )
    torch.testing.assert_close(scaled, out)


def test_unbiased_group_zscore_as_dancegrpo() -> None:
    # (1, 2, 3, 4): mean 2.5, unbiased std sqrt(5/3) = 1.2909944 -> (-1.161895, -0.387298, ...)
    out = group_zscore(torch.tensor([1.0, 2.0, 3.0, 4.0]), one_group(4), unbiased=True)
    torch.testing.assert_close(out, torch.tensor([-1.161895, -0.387298, 0.387298, 1.161895]))


def test_global_std_advantages_as_flow_grpo() -> None:
    # Two prompts: (1, 3) and (10, 14). Centred per prompt: (-1, 1, -2, 2).
    # Global population std of (1, 3, 10, 14): mean 7, squares 36, 16, 9, 49 -> sqrt(27.5)
    #   = 5.2440442; + 1e-4 -> 5.2441442. Advantages: (-0.190689, 0.190689, -0.381378, 0.381378).
    rewards = {"r": torch.tensor([1.0, 3.0, 10.0, 14.0])}
    out = global_std_advantages(rewards, {"r": 1.0}, torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(
        out, torch.tensor([-0.190689, 0.190689, -0.381378, 0.381378]), atol=1e-6, rtol=1e-5
    )


def test_combine_rewards_needs_a_reward() -> None:
    with pytest.raises(ValueError):
        combine_rewards({}, {}, one_group(2))


# -- backups ------------------------------------------------------------------------------------


def test_backup_mean_k3_literal() -> None:
    # k = 3, d = 1: root = (3 + 0 - 6) / 3 = -1, per tree
    leaf = torch.tensor([[3.0, 0.0, -6.0], [1.0, 1.0, 4.0]])
    values = backup_mean(leaf, k=3)
    torch.testing.assert_close(values[0], torch.tensor([[-1.0], [2.0]]))
    torch.testing.assert_close(values[1], leaf)


def test_logprob_softmax_equals_mean_when_sibling_log_probs_are_equal() -> None:
    g = torch.Generator().manual_seed(0)
    leaf = torch.randn(3, 27, generator=g)  # 3 trees, k = 3, d = 3
    # equal among siblings, different across parents and levels
    edge_log_probs = [
        torch.randn(3, 3**j, generator=g).repeat_interleave(3, dim=1) for j in range(0, 3)
    ]
    soft = backup_logprob_softmax(leaf, edge_log_probs, k=3)
    mean = backup_mean(leaf, k=3)
    assert len(soft) == len(mean) == 4
    for a, b in zip(soft, mean, strict=True):
        torch.testing.assert_close(a, b)


def test_logprob_softmax_literal() -> None:
    # k = 2, d = 2, leaf advantages (2, 0, -1, 1).
    # depth-2 edge log-probs (0, ln 3 | 0, 0): weights (1/4, 3/4) and (1/2, 1/2)
    #   node 0: 2/4 + 0 * 3/4 = 0.5;   node 1: (-1 + 1) / 2 = 0
    # depth-1 edge log-probs (ln 4, 0): weights (4/5, 1/5) -> root = 0.8 * 0.5 + 0.2 * 0 = 0.4
    # (backup_mean would give depth 1 (1, 0) and root 0.5.)
    leaf = torch.tensor([[2.0, 0.0, -1.0, 1.0]])
    edge_log_probs = [
        torch.tensor([[math.log(4.0), 0.0]]),
        torch.tensor([[0.0, math.log(3.0), 0.0, 0.0]]),
    ]
    values = backup_logprob_softmax(leaf, edge_log_probs, k=2)
    torch.testing.assert_close(values[2], leaf)
    torch.testing.assert_close(values[1], torch.tensor([[0.5, 0.0]]))
    torch.testing.assert_close(values[0], torch.tensor([[0.4]]))
    via_dispatch = backup("logprob_softmax", leaf, 2, edge_log_probs, one_group(1))
    torch.testing.assert_close(via_dispatch[0], torch.tensor([[0.4]]))


def test_logprob_softmax_is_shift_invariant_per_sibling_group() -> None:
    # softmax(l + c) = softmax(l): adding a constant to one parent's children changes nothing.
    leaf = torch.tensor([[2.0, 0.0, -1.0, 1.0]])
    base = [torch.tensor([[0.3, -0.2]]), torch.tensor([[0.1, 0.4, -1.0, 0.0]])]
    shifted = [base[0] + 7.0, base[1] + torch.tensor([[5.0, 5.0, -3.0, -3.0]])]
    for a, b in zip(
        backup_logprob_softmax(leaf, base, 2), backup_logprob_softmax(leaf, shifted, 2), strict=True
    ):
        torch.testing.assert_close(a, b)


def test_logprob_softmax_needs_every_level() -> None:
    with pytest.raises(ValueError):
        backup_logprob_softmax(torch.zeros(1, 4), [torch.zeros(1, 4)], k=2)


def test_depth_norm_literal() -> None:
    # Two trees of the same prompt, k = 2, d = 2; leaves A = (0, 2, 4, 10), B = (1, 1, 1, 1).
    # depth 2: all 8 leaves, mean 20 / 8 = 2.5, squares of deviations
    #   6.25 + 0.25 + 2.25 + 56.25 + 4 * 2.25 = 74 -> var 9.25, std sqrt(9.25) = 3.0413813
    # depth 1: node means (1, 7 | 1, 1), mean 2.5, deviations (-1.5, 4.5, -1.5, -1.5),
    #   var (2.25 + 20.25 + 2.25 + 2.25) / 4 = 6.75, std 2.5980762 -> (-1/sqrt3, sqrt3, -1/sqrt3, -1/sqrt3)
    # depth 0: tree means (4, 1), mean 2.5, std 1.5 -> (1, -1)
    leaf = torch.tensor([[0.0, 2.0, 4.0, 10.0], [1.0, 1.0, 1.0, 1.0]])
    values = backup_depth_norm(leaf, k=2, groups=torch.tensor([0, 0]))
    torch.testing.assert_close(values[2], (leaf - 2.5) / math.sqrt(9.25))
    r3 = math.sqrt(3.0)
    torch.testing.assert_close(values[1], torch.tensor([[-1 / r3, r3], [-1 / r3, -1 / r3]]))
    torch.testing.assert_close(values[0], torch.tensor([[1.0], [-1.0]]))


def test_depth_norm_separates_prompts() -> None:
    # One tree per prompt: each depth-0 group has a single node -> 0; leaves z-scored per tree.
    leaf = torch.tensor([[0.0, 2.0, 4.0, 10.0], [1.0, 2.0, 3.0, 4.0]])
    values = backup_depth_norm(leaf, k=2, groups=torch.tensor([0, 1]))
    torch.testing.assert_close(values[0], torch.zeros(2, 1))
    torch.testing.assert_close(
        values[2][1], torch.tensor([-1.3416408, -0.4472136, 0.4472136, 1.3416408])
    )


def test_backup_rejects_a_leaf_count_that_is_not_a_power_of_k() -> None:
    with pytest.raises(ValueError):
        backup_mean(torch.zeros(1, 6), k=4)
    with pytest.raises(ValueError):
        backup("nope", torch.zeros(1, 4), 2, [], one_group(1))
