"""SDE window placement: random (truncated geometric), shift and fixed (TREEGRPO.md section 3)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from treegrpo.config import TreeConfig
from treegrpo.windows import truncated_geometric_probabilities, window_start


def test_truncated_geometric_literal() -> None:
    # r = 0.5, s = 0..2: weights 0.5, 0.25, 0.125 (sum 0.875) -> 4/7, 2/7, 1/7
    probs = truncated_geometric_probabilities(2, 0.5)
    assert probs == pytest.approx([4 / 7, 2 / 7, 1 / 7])


def test_truncated_geometric_other_ratio() -> None:
    # r = 0.8, s = 0..1: 0.2, 0.16 (sum 0.36) -> 5/9, 4/9;  last_start 0 -> [1]
    assert truncated_geometric_probabilities(1, 0.8) == pytest.approx([5 / 9, 4 / 9])
    assert truncated_geometric_probabilities(0, 0.5) == pytest.approx([1.0])


def test_random_draws_stay_in_range_and_follow_the_probabilities() -> None:
    tree = TreeConfig(window="random", window_ratio=0.5)
    steps, width, draws = 10, 3, 20_000
    rng = random.Random(0)
    counts = Counter(window_start(tree, steps, width, epoch, rng) for epoch in range(draws))
    assert set(counts) <= set(range(steps - width + 1))
    probs = truncated_geometric_probabilities(steps - width, 0.5)
    for s, p in enumerate(probs):
        assert counts[s] / draws == pytest.approx(p, abs=0.015), f"s = {s}"


def test_random_draws_are_reproducible_from_the_rng() -> None:
    tree = TreeConfig(window="random")
    a = [window_start(tree, 10, 3, e, random.Random(7)) for e in range(5)]
    b = [window_start(tree, 10, 3, e, random.Random(7)) for e in range(5)]
    assert a == b


def test_shift_moves_and_wraps() -> None:
    # T = 6, width 2 -> valid starts 0..4; start 3, +1 every 2 epochs:
    # epochs 0,1 -> 3; 2,3 -> 4; 4,5 -> 5 mod 5 = 0; 6,7 -> 1
    tree = TreeConfig(window="shift", window_start=3, shift_every=2, shift_by=1)
    rng = random.Random(0)
    starts = [window_start(tree, 6, 2, epoch, rng) for epoch in range(8)]
    assert starts == [3, 3, 4, 4, 0, 0, 1, 1]


def test_shift_by_two_every_epoch() -> None:
    # T = 10, width 3 -> starts 0..7 (8 of them); 0, 2, 4, 6, 8 mod 8 = 0, 2, ...
    tree = TreeConfig(window="shift", window_start=0, shift_every=1, shift_by=2)
    starts = [window_start(tree, 10, 3, epoch, random.Random(0)) for epoch in range(6)]
    assert starts == [0, 2, 4, 6, 0, 2]


def test_fixed_returns_window_start() -> None:
    tree = TreeConfig(window="fixed", window_start=4)
    rng = random.Random(0)
    assert [window_start(tree, 10, 3, epoch, rng) for epoch in range(5)] == [4] * 5
