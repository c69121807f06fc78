"""treegrpo/statistics.py against values worked out by hand (arithmetic in the comments)."""

from __future__ import annotations

import math

import pytest

from treegrpo.statistics import (
    bootstrap_interval,
    curve_band,
    final_value,
    geometric_mean,
    median,
    median_range,
    paired_ratio,
    pareto_front,
    percentile,
    step_value,
    target_levels,
    time_to_target,
)


def test_median_odd_even_and_empty() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5  # (2 + 3) / 2
    assert math.isnan(median([]))


def test_median_range_coverage_is_the_order_statistic_confidence() -> None:
    summary = median_range([0.8, 0.9, 0.7])
    assert (summary.median, summary.low, summary.high, summary.n) == (0.8, 0.7, 0.9, 3)
    # 1 - 2 * 0.5^3 = 0.75: the chance that three draws do not all fall on one side of the median
    assert summary.coverage == 0.75
    assert median_range([5.0]).coverage == 0.0
    # a target never reached (inf) sorts last: the median of 10, 20, inf is 20
    assert median_range([math.inf, 10.0, 20.0]).median == 20.0


def test_step_value_holds_the_last_point() -> None:
    xs, ys = [1.0, 3.0, 6.0], [0.5, 0.7, 0.9]
    assert step_value(xs, ys, 0.5) is None
    assert step_value(xs, ys, 1.0) == 0.5
    assert step_value(xs, ys, 5.9) == 0.7
    assert step_value(xs, ys, 60.0) == 0.9


def test_curve_band_counts_only_runs_that_reach_x() -> None:
    a = ([1.0, 2.0, 3.0], [0.1, 0.2, 0.3])
    b = ([1.0, 2.0], [0.3, 0.5])
    c = ([2.0, 4.0], [0.0, 0.6])
    band = curve_band([a, b, c], [1.0, 2.0, 3.0, 4.0])
    # x=1: a 0.1, b 0.3, c has no point yet -> median 0.2, range 0.1-0.3, 2 runs
    # x=2: a 0.2, b 0.5, c 0.0 -> median 0.2
    # x=3: a 0.3, b ended at 2 (not counted), c 0.0 -> median 0.15
    # x=4: only c, 0.6
    assert band.n == [2, 3, 2, 1]
    assert band.median == pytest.approx([0.2, 0.2, 0.15, 0.6])
    assert band.low == pytest.approx([0.1, 0.0, 0.0, 0.6])
    assert band.high == pytest.approx([0.3, 0.5, 0.3, 0.6])


def test_target_levels_split_the_gain() -> None:
    # base 0.8, reference 1.0: gain 0.2 -> 0.85, 0.90, 0.95, 0.98
    levels = target_levels(0.8, 1.0)
    assert levels == pytest.approx({0.25: 0.85, 0.5: 0.9, 0.75: 0.95, 0.9: 0.98})
    with pytest.raises(ValueError, match="must exceed"):
        target_levels(0.8, 0.8)


def test_time_to_target_first_crossing_or_inf() -> None:
    xs, ys = [10.0, 20.0, 30.0], [0.80, 0.86, 0.84]
    assert time_to_target(xs, ys, 0.85) == 20.0
    assert time_to_target(xs, ys, 0.80) == 10.0
    assert math.isinf(time_to_target(xs, ys, 0.9))


def test_final_value_means_the_tail() -> None:
    assert final_value([0.1, 0.5, 0.7], last=2) == pytest.approx(0.6)
    assert math.isnan(final_value([]))


def test_percentile_interpolates_like_numpy() -> None:
    # position 0.25 * 4 = 1 -> 2.0; position 0.9 * 4 = 3.6 -> 4 + 0.6 * (5 - 4) = 4.6
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.25) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.9) == pytest.approx(4.6)


def test_geometric_mean() -> None:
    assert geometric_mean([1.0, 4.0]) == pytest.approx(2.0)  # sqrt(1 * 4)
    assert geometric_mean([2.0, 8.0, 4.0]) == pytest.approx(4.0)  # (2 * 8 * 4)^(1/3) = 64^(1/3)


def test_bootstrap_interval_of_two_values() -> None:
    # Resamples of [1, 4]: (1,1) -> 1 with prob 1/4, mixed -> 2 with 1/2, (4,4) -> 4 with 1/4.
    # The 2.5th and 97.5th percentiles of 2000 such draws are 1 and 4.
    low, high = bootstrap_interval([1.0, 4.0], samples=2000, seed=0)
    assert (low, high) == (1.0, 4.0)
    # identical values: no spread at all
    assert bootstrap_interval([3.0, 3.0, 3.0]) == pytest.approx((3.0, 3.0))
    # seeded: the same call gives the same interval
    assert bootstrap_interval([1.0, 2.0, 5.0], seed=7) == bootstrap_interval(
        [1.0, 2.0, 5.0], seed=7
    )


def test_paired_ratio_by_seed_with_censoring() -> None:
    tree = {0: 10.0, 1: 20.0, 2: math.inf, 3: math.inf}
    dance = {0: 40.0, 1: 20.0, 2: 30.0, 3: math.inf, 4: 5.0}
    result = paired_ratio(tree, dance, budget_a=60.0, budget_b=60.0)
    # seed 0: 40/10 = 4; seed 1: 20/20 = 1; seed 2: tree never reached -> 30/60 = 0.5 (a bound);
    # seed 3: neither reached -> left out; seed 4: tree has no run -> left out.
    assert result.per_seed == pytest.approx({0: 4.0, 1: 1.0, 2: 0.5})
    assert result.censored == 1
    assert result.ratio == pytest.approx(geometric_mean([4.0, 1.0, 0.5]))  # 2^(1/3) = 1.26
    assert result.low is not None and result.high is not None
    assert 0.5 <= result.low <= result.ratio <= result.high <= 4.0


def test_paired_ratio_without_pairs() -> None:
    result = paired_ratio({0: math.inf}, {0: math.inf}, 60.0, 60.0)
    assert result.ratio is None and result.per_seed == {}


def test_pareto_front_lower_cost_higher_value() -> None:
    points = {
        "tree": (3.0, 0.97),
        "dance": (4.0, 0.92),  # dominated by tree: slower and lower
        "mix": (2.0, 0.95),
        "flow": (20.0, 0.98),  # the only one higher than tree, at a higher cost
    }
    assert pareto_front(points) == ["mix", "tree", "flow"]


def test_experiment_statistics_by_hand() -> None:
    from treegrpo.statistics import HELDOUT, RunPoints, experiment_statistics

    def run(group: str, rewards: list[float], clocks: list[float]) -> RunPoints:
        points = {0: {HELDOUT: 0.5, "cpu_clock": 0.0, "wall_clock": 0.0, "images_seen": 0.0}}
        for step, (reward, clock) in enumerate(zip(rewards, clocks, strict=True), start=1):
            points[step] = {
                HELDOUT: reward,
                "cpu_clock": clock,
                "wall_clock": 2 * clock,
                "images_seen": 8.0 * step,
                "time/epoch_cpu": clocks[0],
                "time/epoch": 2 * clocks[0],
            }
        return RunPoints(f"{group} seed=0", group, 0, "succeeded", points)

    runs = [run("a", [0.7, 0.9], [10.0, 20.0]), run("b", [0.6, 0.7], [12.0, 24.0])]
    stats = experiment_statistics(runs, budgets={"cpu_clock": 30.0})
    # base 0.5, best final 0.9: levels at 0.5 + L x 0.4 -> 0.6, 0.7, 0.8, 0.86
    assert stats["targets"] == pytest.approx({"0.25": 0.6, "0.5": 0.7, "0.75": 0.8, "0.9": 0.86})
    ratios = {(r["level"], r["clock"]): r for r in stats["ratios"]}
    # 50%: a at 10 CPU s, b at 24 -> 2.4x; 75%: b never -> counted at the 30 s budget: 1.5x
    assert ratios[(0.5, "cpu_clock")]["ratio"] == pytest.approx(2.4)
    assert ratios[(0.75, "cpu_clock")]["ratio"] == pytest.approx(1.5)
    assert ratios[(0.75, "cpu_clock")]["censored"] == 1
    # on wall-clock (no budget given) b counts at its last wall-clock, 48 s, against a's 40 s
    assert ratios[(0.75, "wall_clock")]["ratio"] == pytest.approx(1.2)
    groups = {g["group"]: g for g in stats["groups"]}
    assert groups["b"]["time_to_target"]["0.75"]["cpu_clock"]["reached"] == 0
    assert groups["a"]["final_reward"]["median"] == 0.9
    # a: 10 CPU s/iter for 0.9; b: 12 for 0.7 -> only a is on the front
    assert stats["pareto"] == ["a"]
