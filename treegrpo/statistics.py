"""Statistics of an experiment's runs, computed once: pure functions over plain numbers.

Torch-free and numpy-free, so the API can serve them and a test can check them by hand.

- Per cell (the runs of one group, one per seed): `median_range` gives the median and the
  min-max range over seeds, with the range's coverage as an interval for the median
  (an order statistic: with n seeds, P(min < true median < max) = 1 - 2 * 0.5^n).
- Curves: `step_value` reads a run's curve at any x (reward against CPU seconds, wall-clock or
  images seen); `curve_band` gives median, min and max over seeds on a common grid.
- Targets: `target_levels` puts levels of the gain (25, 50, 75, 90%) between the SHARED base
  evaluation and a reference reward; `time_to_target` is the first x where a curve reaches one.
- Paired ratios: `paired_ratio` compares two methods seed by seed (seed s of A with seed s of B:
  the same held-out yardstick, the same prompts drawn), summarised by the geometric mean of the
  per-seed ratios with a seeded percentile bootstrap interval over seeds.
- `pareto_front`: the runs no other run beats on both final reward (higher) and seconds per
  iteration (lower), the paper's Figure 1 shape.
- Evaluations (the evaluate job's table): `mean_interval` gives a mean over prompts with its
  Student t interval (its t quantile comes from scipy, imported only there).

    mean_interval([0.5, 0.7, 0.6])  # mean 0.6, std 0.1, n 3, [0.352, 0.848]
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GAIN_LEVELS = (0.25, 0.5, 0.75, 0.9)
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class MedianRange:
    """Median over seeds with the min-max range; `coverage` is the range's confidence as an
    interval for the median (0 for one seed)."""

    median: float
    low: float
    high: float
    n: int
    coverage: float


def median(values: Sequence[float]) -> float:
    """The middle value (the mean of the two middle ones for an even count); nan when empty."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return math.nan
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def median_range(values: Sequence[float]) -> MedianRange:
    """Median, min and max over seeds; inf (a target never reached) sorts last."""
    if not values:
        return MedianRange(math.nan, math.nan, math.nan, 0, 0.0)
    n = len(values)
    coverage = 1.0 - 2.0 * 0.5**n if n > 1 else 0.0
    return MedianRange(median(values), min(values), max(values), n, coverage)


def step_value(xs: Sequence[float], ys: Sequence[float], x: float) -> float | None:
    """The curve's y at `x`: the last point at or before x (a step function); None before it."""
    found = None
    for xi, yi in zip(xs, ys, strict=True):
        if xi <= x + 1e-12:
            found = yi
        else:
            break
    return found


@dataclass(frozen=True)
class Band:
    """Median, min and max over runs at each x of `grid` (None where a run has no point yet or
    ended before x: only runs that cover x count, and `n` says how many did)."""

    grid: list[float]
    median: list[float | None]
    low: list[float | None]
    high: list[float | None]
    n: list[int]


def curve_band(
    curves: Sequence[tuple[Sequence[float], Sequence[float]]], grid: Sequence[float]
) -> Band:
    """Curves (xs, ys) of one cell's seeds, read on a common grid of x values."""
    med: list[float | None] = []
    low: list[float | None] = []
    high: list[float | None] = []
    counts: list[int] = []
    for x in grid:
        here = []
        for xs, ys in curves:
            if xs and x <= xs[-1] + 1e-12:
                value = step_value(xs, ys, x)
                if value is not None:
                    here.append(value)
        counts.append(len(here))
        med.append(median(here) if here else None)
        low.append(min(here) if here else None)
        high.append(max(here) if here else None)
    return Band(list(grid), med, low, high, counts)


def target_levels(
    base: float, reference: float, levels: Sequence[float] = GAIN_LEVELS
) -> dict[float, float]:
    """level -> base + level * (reference - base): the reward at that share of the gain."""
    if not reference > base:
        raise ValueError(f"reference reward {reference} must exceed the base reward {base}")
    return {level: base + level * (reference - base) for level in levels}


def time_to_target(xs: Sequence[float], ys: Sequence[float], target: float) -> float:
    """The first x at which y >= target; inf when the curve never reaches it."""
    for x, y in zip(xs, ys, strict=True):
        if y >= target:
            return x
    return math.inf


def final_value(ys: Sequence[float], last: int = 1) -> float:
    """Mean of the curve's last `last` points (nan for an empty curve)."""
    if not ys:
        return math.nan
    tail = list(ys)[-last:]
    return sum(tail) / len(tail)


@dataclass(frozen=True)
class PairedRatio:
    """How many times sooner A reaches a target than B, paired by seed.

    `per_seed` holds B's time over A's for each shared seed (> 1: A is sooner). A time that never
    reached the target counts as the run's budget, so that seed's ratio is only a bound:
    `censored` counts them. `ratio` is the geometric mean of the per-seed ratios; `low`, `high`
    a percentile bootstrap interval over seeds (`confidence`, `samples` resamples, seeded).
    None where no seed pairs, or where neither run of a pair reached the target."""

    ratio: float | None
    low: float | None
    high: float | None
    per_seed: dict[int, float]
    censored: int
    confidence: float


def geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of sorted values, q in [0, 1]."""
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def bootstrap_interval(
    values: Sequence[float],
    confidence: float = 0.95,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the geometric mean of positive `values`."""
    rng = random.Random(seed)
    n = len(values)
    stats = sorted(
        geometric_mean([values[rng.randrange(n)] for _ in range(n)]) for _ in range(samples)
    )
    tail = (1.0 - confidence) / 2.0
    return percentile(stats, tail), percentile(stats, 1.0 - tail)


def paired_ratio(
    times_a: Mapping[int, float],
    times_b: Mapping[int, float],
    budget_a: Mapping[int, float] | float,
    budget_b: Mapping[int, float] | float,
    confidence: float = 0.95,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> PairedRatio:
    """B's time over A's, seed by seed, with a bootstrap interval (see PairedRatio)."""

    def budget(which: Mapping[int, float] | float, s: int) -> float:
        return which[s] if isinstance(which, Mapping) else which

    per_seed: dict[int, float] = {}
    censored = 0
    for s in sorted(set(times_a) & set(times_b)):
        a, b = times_a[s], times_b[s]
        if math.isinf(a) and math.isinf(b):
            continue  # neither reached it: no information on the ratio
        if math.isinf(a) or math.isinf(b):
            censored += 1
        a = budget(budget_a, s) if math.isinf(a) else a
        b = budget(budget_b, s) if math.isinf(b) else b
        per_seed[s] = b / max(a, 1e-12)
    if not per_seed:
        return PairedRatio(None, None, None, {}, censored, confidence)
    ratios = list(per_seed.values())
    low, high = bootstrap_interval(ratios, confidence, samples, seed)
    return PairedRatio(geometric_mean(ratios), low, high, per_seed, censored, confidence)


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names of the points (cost, value) that no other point dominates: none has a cost as low
    and a value as high with one of them strictly better. Sorted by cost."""
    front = []
    for name, (cost, value) in points.items():
        dominated = any(
            c <= cost and v >= value and (c < cost or v > value)
            for other, (c, v) in points.items()
            if other != name
        )
        if not dominated:
            front.append(name)
    return sorted(front, key=lambda n: points[n][0])


# ---------------------------------------------------------------------------------------------
# One experiment's statistics, from its runs' metric points (what GET /experiments/{id} serves
# and bench/reproduce.py prints).

HELDOUT = "heldout/reward"
CLOCKS = ("cpu_clock", "wall_clock", "images_seen")
BAND_POINTS = 40


@dataclass(frozen=True)
class RunPoints:
    """One run: its group and seed, and its metric points by step (step 0: the base model)."""

    name: str
    group: str
    seed: int | None
    status: str
    points: Mapping[int, Mapping[str, float]]

    def curve(self, clock: str) -> tuple[list[float], list[float]]:
        """(clock values, held-out rewards) at the steps that have both, in step order."""
        xs, ys = [], []
        for step in sorted(self.points):
            point = self.points[step]
            if HELDOUT in point and clock in point:
                xs.append(point[clock])
                ys.append(point[HELDOUT])
        return xs, ys

    def per_iteration(self, name: str) -> float:
        """Median over epochs of a per-epoch timing (`time/epoch_cpu`, `time/epoch`)."""
        return median([p[name] for s, p in self.points.items() if s > 0 and name in p])

    def end(self, clock: str) -> float:
        """The run's last value of a clock (its budget spent so far)."""
        values = [p[clock] for p in self.points.values() if clock in p]
        return max(values) if values else 0.0


def _finite(value: float) -> float | None:
    return None if math.isinf(value) or math.isnan(value) else value


def summary_text(summary: Mapping[str, Any] | None, digits: int = 3) -> str:
    """A summary (`_summary`'s JSON) as text: "median [low-high]" over seeds ("never" for a
    seed that did not reach a level), "(k/n)" when only k of n seeds reached it; a level fewer
    than half the seeds reached says how many did and the fastest time."""
    if not summary or not summary.get("n"):
        return "-"
    n, reached, low = summary["n"], summary.get("reached"), summary.get("low")
    if summary.get("median") is None:
        if not reached or low is None:
            return f"not reached (0/{n})"
        return f"median not reached ({reached}/{n} reached, fastest {low:.{digits}f})"
    text = f"{summary['median']:.{digits}f}"
    if n > 1 and low is not None:
        high = "never" if summary.get("high") is None else f"{summary['high']:.{digits}f}"
        text += f" [{low:.{digits}f}-{high}]"
    if reached is not None and reached < n:
        text += f" ({reached}/{n})"
    return text


def _summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """A MedianRange as JSON: a target never reached (inf) is null, with `reached` counting."""
    result = median_range(values)
    return {
        "median": _finite(result.median),
        "low": _finite(result.low),
        "high": _finite(result.high),
        "n": result.n,
        "reached": sum(1 for v in values if not math.isinf(v)),
        "coverage": result.coverage,
    }


def experiment_statistics(
    runs: Sequence[RunPoints],
    reference_group: str | None = None,
    levels: Sequence[float] = GAIN_LEVELS,
    confidence: float = 0.95,
    band_points: int = BAND_POINTS,
    budgets: Mapping[str, float] | None = None,
) -> dict[str, object]:
    """Per group: final held-out reward, seconds per iteration and time to each target level
    (median and range over seeds) and bands of reward against each clock; paired ratios of
    every group against `reference_group` (default: the first) at each level on the CPU clock
    (the runs' own time) and on wall-clock; and the Pareto front of final reward against CPU
    seconds per iteration. Targets lie between the SHARED base evaluation (the median of the
    runs' step-0 points, identical on a shared yardstick) and the best group's median final
    reward: level L is base + L x (best - base). A run that never reached a level counts at
    the end of its clock, or at `budgets[clock]` where given and later (a run stopped before an
    epoch would overrun its budget had no time left to reach it within the budget)."""
    groups: dict[str, list[RunPoints]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    base_values = [r.points[0][HELDOUT] for r in runs if 0 in r.points and HELDOUT in r.points[0]]
    base = median(base_values)
    finals: dict[str, list[float]] = {}
    for group, members in groups.items():
        finals[group] = [
            r.curve("cpu_clock")[1][-1] for r in members if len(r.curve("cpu_clock")[1]) > 1
        ]
    best = max((median(v) for v in finals.values() if v), default=math.nan)
    targets: dict[float, float] = {}
    if not math.isnan(base) and not math.isnan(best) and best > base:
        targets = target_levels(base, best, levels)
    times: dict[str, dict[str, dict[float, dict[int, float]]]] = {}
    out_groups = []
    for group, members in groups.items():
        entry: dict[str, object] = {
            "group": group,
            "runs": [r.name for r in members],
            "seeds": [r.seed for r in members],
            "final_reward": _summary(finals[group]),
            "cpu_seconds_per_iteration": _summary(
                [r.per_iteration("time/epoch_cpu") for r in members]
            ),
            "seconds_per_iteration": _summary([r.per_iteration("time/epoch") for r in members]),
        }
        to_target: dict[str, dict[str, object]] = {}
        times[group] = {}
        for clock in CLOCKS:
            times[group][clock] = {}
            for level, target in targets.items():
                by_seed = {
                    (r.seed if r.seed is not None else i): time_to_target(*r.curve(clock), target)
                    for i, r in enumerate(members)
                }
                times[group][clock][level] = by_seed
                to_target.setdefault(f"{level:g}", {})[clock] = _summary(list(by_seed.values()))
        entry["time_to_target"] = to_target
        bands: dict[str, object] = {}
        for clock in CLOCKS:
            curves = [r.curve(clock) for r in members]
            end = max((xs[-1] for xs, _ in curves if xs), default=0.0)
            grid = [end * i / (band_points - 1) for i in range(band_points)] if end > 0 else [0.0]
            band = curve_band(curves, grid)
            bands[clock] = {
                "x": band.grid,
                "median": band.median,
                "low": band.low,
                "high": band.high,
                "n": band.n,
            }
        entry["curves"] = bands
        out_groups.append(entry)
    names = list(groups)
    reference = reference_group if reference_group in groups else (names[0] if names else None)
    ratios = []
    if reference is not None:
        for group in names:
            if group == reference:
                continue
            for clock in ("cpu_clock", "wall_clock"):
                floor = (budgets or {}).get(clock, 0.0)
                budget_a = {
                    (r.seed if r.seed is not None else i): max(r.end(clock), floor)
                    for i, r in enumerate(groups[reference])
                }
                budget_b = {
                    (r.seed if r.seed is not None else i): max(r.end(clock), floor)
                    for i, r in enumerate(groups[group])
                }
                for level in targets:
                    result = paired_ratio(
                        times[reference][clock][level],
                        times[group][clock][level],
                        budget_a,
                        budget_b,
                        confidence,
                    )
                    ratios.append(
                        {
                            "reference": reference,
                            "group": group,
                            "clock": clock,
                            "level": level,
                            "ratio": result.ratio,
                            "low": result.low,
                            "high": result.high,
                            "per_seed": {str(k): v for k, v in result.per_seed.items()},
                            "censored": result.censored,
                            "confidence": confidence,
                        }
                    )
    costs = {
        g: (median([r.per_iteration("time/epoch_cpu") for r in groups[g]]), median(finals[g]))
        for g in names
        if finals[g]
    }
    costs = {g: c for g, c in costs.items() if not any(math.isnan(v) for v in c)}
    return {
        "base_reward": _finite(base),
        "best_reward": _finite(best),
        "levels": list(levels),
        "targets": {f"{k:g}": v for k, v in targets.items()},
        "reference_group": reference,
        "groups": out_groups,
        "ratios": ratios,
        "pareto": pareto_front(costs),
        "pareto_points": {
            g: {"cpu_seconds_per_iteration": c[0], "final_reward": c[1]} for g, c in costs.items()
        },
    }


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
