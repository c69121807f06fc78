"""SDE window placement: random (truncated geometric), shift and fixed (docs/TREEGRPO.md §3,
§7.4; paper Eq. 7), and MixGRPO's sliding window (§7.3)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from treegrpo.config import TreeConfig
from treegrpo.windows import sliding_window, truncated_geometric_probabilities, window_start


def test_truncated_geometric_literal() -> None:
    # r = 0.5, s = 0..2: weights 0.5, 0.25, 0.125 (sum 0.875) -> 4/7, 2/7, 1/7
    probs = truncated_geometric_probabilities(2, 0.5)
    assert probs == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_truncated_geometric_other_ratio() -> None:
    # r = 0.8, s = 0..1: 0.2, 0.16 (sum 0.36) -> 5/9, 4/9;  last_start 0 -> [1]
    assert truncated_geometric_probabilities(1, 0.8) == pytest.approx([5 / 9, 4 / 9])
    assert truncated_geometric_probabilities(0, 0.5) == pytest.approx([1.0])


def test_random_draws_stay_in_range_and_follow_the_probabilities() -> None:
    # Paper Eq. 7: s = 0 .. T - d - 1, so the window never covers the last step.
    tree = TreeConfig(window="random", window_ratio=0.5, depth=3)
    steps, draws = 10, 20_000
    rng = random.Random(0)
    counts = Counter(window_start(tree, steps, epoch, rng) for epoch in range(draws))
    assert set(counts) == set(range(steps - 3))  # 0..6
    probs = truncated_geometric_probabilities(steps - 3 - 1, 0.5)
    for s, p in enumerate(probs):
        assert counts[s] / draws == pytest.approx(p, abs=0.015), f"s = {s}"


def test_random_draws_are_reproducible_from_the_rng() -> None:
    tree = TreeConfig(window="random")
    a = [window_start(tree, 10, e, random.Random(7)) for e in range(5)]
    b = [window_start(tree, 10, e, random.Random(7)) for e in range(5)]
    assert a == b


def test_shift_moves_and_stays_at_the_last_start() -> None:
    # T = 6, depth 2 -> starts 0..3 (the window leaves the last step out); start 1, +1 every
    # 2 epochs: epochs 0,1 -> 1; 2,3 -> 2; 4,5 -> 3; then it stays at 3 (no wrap-around).
    tree = TreeConfig(window="shift", window_start=1, shift_every=2, shift_by=1, depth=2)
    rng = random.Random(0)
    starts = [window_start(tree, 6, epoch, rng) for epoch in range(10)]
    assert starts == [1, 1, 2, 2, 3, 3, 3, 3, 3, 3]


def test_shift_default_moves_every_50_epochs() -> None:
    # The official code's period: start 0 for epochs 0..49, 1 for 50..99, ..., 6 from 300 on.
    tree = TreeConfig(window="shift")
    starts = [window_start(tree, 10, epoch, random.Random(0)) for epoch in (0, 49, 50, 299, 300)]
    assert starts == [0, 0, 1, 5, 6]
    assert window_start(tree, 10, 10_000, random.Random(0)) == 6


def test_fixed_returns_window_start() -> None:
    tree = TreeConfig(window="fixed", window_start=4)
    rng = random.Random(0)
    assert [window_start(tree, 10, epoch, rng) for epoch in range(5)] == [4] * 5


def test_mixgrpo_window_slides_narrows_and_rolls_back() -> None:
    # T = 10, width 4, every 25 iterations: steps below T - 2 = 8 only, so
    # starts 0..7; windows [0..3], [1..4], ..., [4..7], [5, 6, 7], [6, 7], [7], then [0..3].
    windows = [sliding_window(10, 4, 25, it) for it in (0, 24, 25, 100, 125, 150, 175, 200)]
    assert windows == [
        [0, 1, 2, 3],
        [0, 1, 2, 3],
        [1, 2, 3, 4],
        [4, 5, 6, 7],
        [5, 6, 7],
        [6, 7],
        [7],
        [0, 1, 2, 3],
    ]
