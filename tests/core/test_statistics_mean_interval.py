"""mean_interval against hand-computed Student t intervals (t quantiles from printed tables)."""

from __future__ import annotations

import math

import pytest

from treegrpo.statistics import MeanInterval, mean_interval


def test_four_values_at_95_percent() -> None:
    # mean = 10 / 4 = 2.5; std = sqrt((2.25 + 0.25 + 0.25 + 2.25) / 3) = sqrt(5 / 3) = 1.290994
    # t_{0.975, 3} = 3.182446; half = 3.182446 * 1.290994 / sqrt(4) = 2.054260
    result = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert result.n == 4
    assert result.mean == 2.5
    assert result.std == pytest.approx(1.290994, abs=1e-6)
    assert result.low == pytest.approx(2.5 - 2.054260, abs=1e-5)
    assert result.high == pytest.approx(2.5 + 2.054260, abs=1e-5)


def test_three_values_at_95_percent() -> None:
    # mean 0.6, std 0.1; t_{0.975, 2} = 4.302653; half = 4.302653 * 0.1 / sqrt(3) = 0.248414
    result = mean_interval([0.5, 0.7, 0.6])
    assert result.mean == pytest.approx(0.6)
    assert result.std == pytest.approx(0.1)
    assert (result.low, result.high) == pytest.approx((0.6 - 0.248414, 0.6 + 0.248414), abs=1e-6)


def test_two_values_at_90_percent() -> None:
    # mean 1, std sqrt(2); t_{0.95, 1} = 6.313752; half = 6.313752 * sqrt(2) / sqrt(2) = 6.313752
    result = mean_interval([0.0, 2.0], confidence=0.90)
    assert (result.low, result.high) == pytest.approx((1 - 6.313752, 1 + 6.313752), abs=1e-6)


def test_many_values_approach_the_normal_interval() -> None:
    # 1000 alternating 0/1: mean 0.5, std = sqrt(250 / 999) = 0.500250;
    # t_{0.975, 999} = 1.962341; half = 1.962341 * 0.500250 / sqrt(1000) = 0.031043
    result = mean_interval([0.0, 1.0] * 500)
    assert result.high - result.mean == pytest.approx(0.031043, abs=1e-6)


def test_one_value_has_a_zero_width_interval() -> None:
    assert mean_interval([3.0]) == MeanInterval(3.0, 0.0, 1, 3.0, 3.0)


@pytest.mark.parametrize(
    ("values", "confidence", "message"),
    [
        ([], 0.95, "at least one"),
        ([1.0, math.nan], 0.95, "not finite"),
        ([1.0, 2.0], 1.0, "confidence"),
    ],
)
def test_bad_input_is_refused(values: list[float], confidence: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mean_interval(values, confidence)
