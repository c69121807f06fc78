"""Metric points -> chart series and time-to-reward numbers (pure functions).

The trainer logs one point per (epoch, name): `reward_mean` (weighted sum of the rewards),
`reward/<name>_mean` per reward, `loss`, `clip_fraction`, `approx_kl` (and `kl` with a KL term),
`ratio_mean/min/max`, and the x-axes `wall_clock` (training seconds so far) and `images_seen`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from frontend.charts import ema_smooth
from frontend.client import MetricPoint

WALL_CLOCK = "wall_clock"
IMAGES_SEEN = "images_seen"
# The training process's CPU seconds per epoch (logged by the trainer), and their running sum,
# which this module derives: a clock that load on the machine barely moves.
CPU_EPOCH = "time/epoch_cpu"
CPU_CLOCK = "cpu_clock"
TRAINING_METRICS = (
    ("loss", ("loss",)),
    ("clip fraction", ("clip_fraction",)),
    ("KL", ("kl", "approx_kl")),
    ("ratio", ("ratio_mean", "ratio_min", "ratio_max")),
    # Correctness checks the trainer logs every epoch, for every algorithm.
    ("on-policy gap: max |ratio - 1|, first minibatch", ("check/ratio_dev_first_minibatch",)),
    ("groups without signal / advantages clipped", ("check/zero_std_groups", "check/adv_clipped")),
    ("seconds per epoch", ("time/rollout", "time/reward", "time/update")),
    ("images per second", ("throughput/images_per_s",)),
)
# The last epoch's checks, as a table above the charts: (label, metric, format, warn above).
CHECKS = (
    ("max |ratio - 1| on the first minibatch", "check/ratio_dev_first_minibatch", "{:.1e}", 1e-3),
    ("clip fraction", "clip_fraction", "{:.3f}", None),
    ("prompt groups with zero reward std", "check/zero_std_groups", "{:.0%}", 0.5),
    ("advantages clipped", "check/adv_clipped", "{:.1%}", 0.05),
    ("rollout / reward / update (s)", "", "", None),
    ("images per second", "throughput/images_per_s", "{:.1f}", None),
)


def last_value(values: Mapping[str, Mapping[int, float]], name: str) -> float | None:
    series = values.get(name, {})
    return series[max(series)] if series else None


@dataclass
class MetricStore:
    """Every point of one job seen so far, by name then step (a re-sent point replaces itself)."""

    job_id: int | None = None
    values: dict[str, dict[int, float]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)

    def add(self, points: Iterable[MetricPoint]) -> int:
        added = 0
        for p in points:
            series = self.values.setdefault(p.name, {})
            if p.step not in series:
                added += 1
            series[p.step] = p.value
            self.names.add(p.name)
        return added

    @property
    def last_step(self) -> int | None:
        steps = [s for series in self.values.values() for s in series]
        return max(steps) if steps else None

    def count(self) -> int:
        return sum(len(series) for series in self.values.values())


def reward_names(names: Iterable[str]) -> list[str]:
    """`reward_mean` first, then one `reward/<name>_mean` per reward, then the held-out
    gallery's `eval/<name>_mean` (logged from epoch 0, the baseline)."""
    names = set(names)
    per_reward = sorted(n for n in names if n.startswith("reward/") and n.endswith("_mean"))
    held_out = sorted(n for n in names if n.startswith("eval/") and n.endswith("_mean"))
    out = ["reward_mean"] if "reward_mean" in names else []
    return out + per_reward + held_out


def eval_name(reward_name: str) -> str | None:
    """The held-out series that goes with a training reward series: reward/<r>_mean ->
    eval/<r>_mean; reward_mean has none (the eval set is scored per reward)."""
    if reward_name.startswith("reward/") and reward_name.endswith("_mean"):
        return "eval/" + reward_name[len("reward/") :]
    return None


def reward_chart_groups(names: Iterable[str]) -> list[tuple[str, list[str]]]:
    """(title, series) of the Run tab's reward charts: each reward's training mean with its
    held-out gallery mean; with several rewards, the weighted mean first on its own."""
    names = set(names)
    per_reward = sorted(n for n in names if n.startswith("reward/") and n.endswith("_mean"))
    groups: list[tuple[str, list[str]]] = []
    if len(per_reward) != 1 and "reward_mean" in names:
        groups.append(("reward (weighted mean)", ["reward_mean"]))
    for name in per_reward:
        series = [name]
        held = eval_name(name)
        if held and held in names:
            series.append(held)
        groups.append((reward_label(name), series))
    if not groups:
        held_out = sorted(n for n in names if n.startswith("eval/") and n.endswith("_mean"))
        groups.append(("reward", ["reward_mean", *held_out]))
    return groups


def series_label(name: str) -> str:
    if name.startswith("eval/"):
        return "held-out gallery"
    if name == "reward_mean" or name.startswith("reward/"):
        return "training trees"
    return name


def reward_label(name: str) -> str:
    if name == "reward_mean":
        return "reward (weighted mean)"
    if name.startswith("reward/") and name.endswith("_mean"):
        return f"reward: {name[len('reward/') : -len('_mean')]}"
    if name.startswith("eval/") and name.endswith("_mean"):
        return f"held-out {name[len('eval/') : -len('_mean')]}"
    return name


def xy(
    values: Mapping[str, Mapping[int, float]], y_name: str, x_name: str | None = None
) -> tuple[list[float], list[float]]:
    """Points of `y_name` against the step (x_name None) or against another metric logged at
    the same steps (wall_clock, images_seen); steps missing either are skipped, except that
    epoch 0 (the baseline, before any training) sits at 0 seconds and 0 images."""
    ys = values.get(y_name, {})
    if x_name is None:
        steps = sorted(ys)
        return [float(s) for s in steps], [ys[s] for s in steps]
    xs = dict(values.get(x_name, {}))
    if x_name in (WALL_CLOCK, IMAGES_SEEN, CPU_CLOCK):
        xs.setdefault(0, 0.0)
    steps = sorted(s for s in ys if s in xs)
    return [xs[s] for s in steps], [ys[s] for s in steps]


def first_reaching(xs: list[float], ys: list[float], target: float) -> float | None:
    """The first x at which the curve reaches `target` (None if it never does)."""
    for x, y in zip(xs, ys, strict=True):
        if y >= target:
            return x
    return None


@dataclass(frozen=True)
class RunSummary:
    final: float | None
    best: float | None
    seconds_to_target: float | None
    images_to_target: float | None
    seconds_per_epoch: float | None


def cpu_clock(values: Mapping[str, Mapping[int, float]]) -> dict[int, float]:
    """CPU seconds of training up to each epoch: the running sum of `time/epoch_cpu` (empty when the
    run did not log it, or missed an epoch: a sum with holes would be wrong)."""
    per_epoch = values.get(CPU_EPOCH, {})
    steps = sorted(per_epoch)
    if not steps or steps != list(range(steps[0], steps[0] + len(steps))) or steps[0] > 1:
        return {}
    out, total = {}, 0.0
    for step in steps:
        total += per_epoch[step]
        out[step] = total
    return out


def timing_clock(runs: Iterable[Mapping[str, Mapping[int, float]]]) -> str:
    """The clock to time runs by: CPU seconds when every run logged them, else wall-clock."""
    return CPU_CLOCK if all(cpu_clock(values) for values in runs) else WALL_CLOCK


def summarise_run(
    values: Mapping[str, Mapping[int, float]],
    metric: str,
    *,
    target: float | None,
    smoothing: float,
    clock: str = WALL_CLOCK,
) -> RunSummary:
    """Final and best (smoothed) value of `metric`, and when the smoothed curve first reached
    `target` in training seconds of `clock` (wall_clock, or cpu_clock derived from time/epoch_cpu)
    and in images seen."""
    steps = sorted(values.get(metric, {}))
    if not steps:
        return RunSummary(None, None, None, None, None)
    raw = [values[metric][s] for s in steps]
    smooth = ema_smooth(raw, smoothing) if smoothing > 0 else raw
    logged = cpu_clock(values) if clock == CPU_CLOCK else values.get(WALL_CLOCK, {})
    per_epoch = logged[max(logged)] / len(logged) if logged else None
    spent = {0: 0.0, **logged}  # epoch 0 is the baseline: nothing spent yet
    seen = {0: 0.0, **values.get(IMAGES_SEEN, {})}
    reached_s = reached_i = None
    if target is not None:
        for step, value in zip(steps, smooth, strict=True):
            if value >= target:
                reached_s = spent.get(step)
                reached_i = seen.get(step)
                break
    return RunSummary(smooth[-1], max(smooth), reached_s, reached_i, per_epoch)


def auto_target(finals: Iterable[float | None]) -> float | None:
    """The default target of the comparison: the lowest final (smoothed) reward among the runs,
    so the table answers 'how soon did each run reach what the weakest one ended with'."""
    known = [f for f in finals if f is not None]
    return min(known) if known else None


# The over-optimisation watch (docs/API.md): per gallery epoch, the gap between the training
# reward and the held-out gallery's, and the gallery's diversity (mean pairwise image distance).
GAP, DIVERSITY, OVEROPT = "watch/reward_gap", "watch/diversity", "watch/overopt"


def overoptimising(values: Mapping[str, Mapping[int, float]]) -> tuple[int, int] | None:
    """(previous, latest) gallery epochs when, between the last two that have both numbers, the
    gap rose and the diversity fell (the signature of reward hacking); None otherwise."""
    gap, div = values.get(GAP, {}), values.get(DIVERSITY, {})
    both = sorted(set(gap) & set(div))
    if len(both) < 2:
        flagged = values.get(OVEROPT, {})
        return None if not flagged or not flagged[max(flagged)] else (max(flagged), max(flagged))
    a, b = both[-2], both[-1]
    return (a, b) if gap[b] > gap[a] and div[b] < div[a] else None
