"""Tree structure and counts (docs/TREEGRPO.md §3)."""

from __future__ import annotations

import pytest

from treegrpo.tree import (
    TreeShape,
    branching_node_count,
    leaf_count,
    model_evaluations,
    recorded_state_count,
    trained_edge_count,
)


def test_paper_default_counts() -> None:
    # k = 3, d = 3: 27 leaves, 1 + 3 + 9 = 13 branching nodes, 3 + 9 + 27 = 39 trained edges
    assert leaf_count(3, 3) == 27
    assert branching_node_count(3, 3) == 13
    assert trained_edge_count(3, 3) == 39


@pytest.mark.parametrize(
    ("k", "d", "steps", "start", "evals", "states"),
    [
        # evals = s + (k^d - 1)/(k - 1) + k^d (T - s - d); states = 1 + s + (k^(d+1) - k)/(k - 1) + k^d (T - s - d)
        # k3 d3 T10 s0: 0 + 13 + 27 * 7 = 202;   1 + 0 + 39 + 27 * 7 = 229
        (3, 3, 10, 0, 202, 229),
        # k3 d3 T10 s7 (window at the end): 7 + 13 + 0 = 20;   1 + 7 + 39 + 0 = 47
        (3, 3, 10, 7, 20, 47),
        # k2 d2 T6 s1: 1 + 3 + 4 * 3 = 16;   1 + 1 + 6 + 4 * 3 = 20
        (2, 2, 6, 1, 16, 20),
        # k4 d1 T5 s2: 2 + 1 + 4 * 2 = 11;   1 + 2 + 4 + 4 * 2 = 15
        (4, 1, 5, 2, 11, 15),
    ],
)
def test_counts_by_hand(k: int, d: int, steps: int, start: int, evals: int, states: int) -> None:
    assert model_evaluations(k, d, steps, start) == evals
    assert recorded_state_count(k, d, steps, start) == states


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("start", [0, 1, 3])
def test_counts_agree_with_the_shape(k: int, d: int, start: int) -> None:
    # Every state at steps 0..T-1 takes one evaluation; every state 0..T is recorded.
    steps = 6
    shape = TreeShape(k, d, steps, start)
    assert model_evaluations(k, d, steps, start) == sum(shape.width(i) for i in range(steps))
    assert recorded_state_count(k, d, steps, start) == sum(shape.width(i) for i in range(steps + 1))
    assert branching_node_count(k, d) == sum(
        shape.width(i) for i in range(steps) if shape.is_sde_step(i)
    )
    assert shape.width(steps) == leaf_count(k, d)


def test_shape_widths_depths_and_sde_steps() -> None:
    # k = 2, d = 2, T = 6, s = 1: widths 1, 1, 2, 4, 4, 4, 4; branching at steps 1 and 2
    shape = TreeShape(k=2, depth=2, steps=6, window_start=1)
    assert shape.window_end == 3
    assert [shape.width(i) for i in range(7)] == [1, 1, 2, 4, 4, 4, 4]
    assert [shape.depth_at(i) for i in range(7)] == [0, 0, 1, 2, 2, 2, 2]
    assert [shape.is_sde_step(i) for i in range(6)] == [False, True, True, False, False, False]


def test_shape_parents() -> None:
    shape = TreeShape(k=3, depth=2, steps=5, window_start=1)
    # inside the window node n's parent is n // k
    assert [shape.parent(2, n) for n in range(3)] == [0, 0, 0]
    assert [shape.parent(3, n) for n in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # outside it each node has one child with the same number
    assert shape.parent(1, 0) == 0
    assert [shape.parent(4, n) for n in range(9)] == list(range(9))
    assert [shape.parent(5, n) for n in range(9)] == list(range(9))


def test_parent_chain_reaches_the_root() -> None:
    # node n at the end of the window descends from n // k^j, j levels up
    shape = TreeShape(k=3, depth=3, steps=10, window_start=2)
    for node in range(27):
        n = node
        for step in range(10, 0, -1):
            n = shape.parent(step, n)
            assert 0 <= n < shape.width(step - 1)
        assert n == 0
    assert shape.parent(5, 17) == 5 and shape.parent(4, 5) == 1 and shape.parent(3, 1) == 0


@pytest.mark.parametrize(
    ("k", "d", "steps", "start"),
    [(1, 2, 10, 0), (3, 0, 10, 0), (3, 3, 10, 8), (3, 3, 10, -1), (2, 11, 10, 0)],
    ids=["k<2", "d<1", "window-past-end", "negative-start", "window-longer-than-T"],
)
def test_invalid_shapes_raise(k: int, d: int, steps: int, start: int) -> None:
    with pytest.raises(ValueError):
        TreeShape(k, d, steps, start)


def test_window_may_end_at_the_last_step() -> None:
    shape = TreeShape(k=3, depth=3, steps=10, window_start=7)
    assert shape.is_sde_step(9) and shape.width(10) == 27
