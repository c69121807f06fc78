"""Statistics of evaluations and experiments: means with confidence intervals.

mean_interval([0.5, 0.7, 0.6])  # mean 0.6, std 0.1, n 3, [0.352, 0.848]
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class MeanInterval:
    """A sample mean with its (Student t) confidence interval [low, high]."""

    mean: float
    std: float  # sample standard deviation (n - 1 in the denominator)
    n: int
    low: float
    high: float


def mean_interval(values: Iterable[float], confidence: float = 0.95) -> MeanInterval:
    """Mean, sample std and the two-sided Student t interval of the mean of `values`.

        half = t_{(1 + confidence) / 2, n - 1} * std / sqrt(n)

    One value has no spread: its interval is the value itself (std 0). Raises ValueError on
    no values, a value that is not finite, or a confidence outside (0, 1).
    """
    from scipy.stats import t as student_t  # scipy comes with scikit-learn (digits)

    data = [float(v) for v in values]
    if not data:
        raise ValueError("mean_interval needs at least one value")
    if not all(math.isfinite(v) for v in data):
        raise ValueError("mean_interval got a value that is not finite")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(data)
    mean = math.fsum(data) / n
    if n == 1:
        return MeanInterval(mean, 0.0, 1, mean, mean)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in data) / (n - 1))
    half = float(student_t.ppf((1.0 + confidence) / 2.0, n - 1)) * std / math.sqrt(n)
    return MeanInterval(mean, std, n, mean - half, mean + half)
