"""Training efficiency: TreeGRPO against DanceGRPO, Flow-GRPO and MixGRPO under one time budget.

Every method trains the same model (the shipped `digits` model by default) on the same reward,
training prompts, learning rate, seeds and wall-clock budget, through the same `Trainer`: only
`algorithm` (and, for the anchor rows, `flat.group_size`) differs between the presets
`<family>-treegrpo`, `<family>-dancegrpo`, `<family>-flowgrpo` and `<family>-mixgrpo`.

Fair group size. The flat baselines use G = k^d = 27 trajectories per prompt, so every method makes
the same images per iteration (4 prompts x 27 = 108) and sees the same number of images at equal
epochs. With `--anchor-groups` (on by default, off with --quick) two extra rows use the anchors'
own group sizes: DanceGRPO G = 12 and Flow-GRPO G = 24 (48 and 96 images per iteration).

What is measured, per run (method x seed):
- the training reward `reward_mean` of each epoch (the 4 training prompts' images), against the
  trainer's `wall_clock` (seconds spent inside epochs: rollout + scoring + update; loading and
  evaluation are outside it) and against `images_seen`;
- seconds per iteration: the median epoch time (`time/epoch`), split into rollout and update;
- after the budget, outside the clock: the held-out gallery reward (`Trainer.sample_gallery`: ODE
  samples of the held-out prompt phrasing from fixed noise, 40 images for digits).

The per-epoch training reward is noisy (4 prompts per epoch: which digits are drawn matters
more than training early on), so curves are smoothed with a trailing mean over the last
`--smooth` epochs (5). The same number of epochs is averaged for every method, so every smoothed
point stands on the same number of images; points that average fewer (a run's first 4 epochs)
are not plotted and cannot reach the target, or one lucky epoch of easy prompts would.
- target reward: the median over seeds of DanceGRPO's (G = 27) final smoothed training reward
  (or `--target`);
- time to target: the first wall-clock at which a run's smoothed curve reaches the target;
  "> budget" if it never does; images to target likewise on `images_seen`. The speedup is
  DanceGRPO's median time over the method's; a time beyond the budget only bounds it (">", "<");
- reward at equal wall-clock: each run's smoothed reward at the last epoch that ended by T_eq,
  the smallest final wall-clock over all runs (every run got at least that far).
Figures are medians over seeds with [min-max]. A run starts another epoch only while its last
epoch's duration still fits into the budget, so runs end just under it (the first epoch always
runs).

Shared machine. Within each seed the methods run in turn (seed 0: all methods, then seed 1, ...),
so slow drift hits every method alike. The header prints how busy the CPUs were before the start;
before each run the script waits (up to `--idle-wait` s) for the CPUs to be idle, measures the
share of CPU time other processes took during the run (shown per run), and repeats a run they
disturbed by more than 20% (up to `--retries` times, keeping the least-disturbed attempt). With 2
torch threads on 2 cores, another process on one core stalls every parallel op; small batches
(TreeGRPO's update) suffer most, so disturbed timings are not comparable.

`--reanalyse results.json` trains nothing: it recomputes every figure, the plot and the text
from the curves an earlier run saved (e.g. with another `--smooth`).

Run (from the repository root):

    .venv/bin/python bench/efficiency.py --quick     # < 1 min: 8 s budget, 1 seed, no anchors
    .venv/bin/python bench/efficiency.py             # 60 s x 3 seeds x 6 methods, ~20 min on 2 cores
    .venv/bin/python bench/efficiency.py --preset-family tiny --budget 2   # the test model
    .venv/bin/python bench/efficiency.py --reanalyse bench/results/efficiency-digits.json

Writes `efficiency-<family>[-quick].{json,png,txt}` to `--out` (default bench/results): all
curves and figures, the plot (reward vs wall-clock and vs images seen) and the printed text. The
last two lines are `tree_vs_dance_time_to_target: <x>x` and
`tree_vs_dance_seconds_per_iteration: <x>x`.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from treegrpo.algorithms import get_algorithm
from treegrpo.callbacks import Callback
from treegrpo.config import RunConfig, resolve_config
from treegrpo.models.registry import load_model_for
from treegrpo.rewards.registry import load_run_rewards
from treegrpo.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plotting import PALETTE, HLine, Panel, Series, save_chart

RESULTS = Path(__file__).resolve().parent / "results"
BUSY_WARNING = 0.20  # warn when other processes took more than this share of the CPUs


@dataclass(frozen=True)
class Method:
    name: str  # row name and --methods key
    algorithm: str
    label: str  # legend
    overrides: tuple[tuple[str, Any], ...] = ()  # config overrides on top of the preset
    preset_suffix: str = ""  # e.g. "-matched": the preset <family>-<algorithm><suffix>


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("treegrpo", "treegrpo", "TreeGRPO"),
        Method("dancegrpo", "dancegrpo", "DanceGRPO"),
        Method("flowgrpo", "flowgrpo", "Flow-GRPO"),
        Method("mixgrpo", "mixgrpo", "MixGRPO"),
        # Matched budget, labelled as such: G = k^d = 27, as many images per iteration as the tree.
        Method("dancegrpo-matched", "dancegrpo", "DanceGRPO G=27 (matched)", (), "-matched"),
        Method("flowgrpo-matched", "flowgrpo", "Flow-GRPO G=27 (matched)", (), "-matched"),
    )
}
MAIN_METHODS = ("treegrpo", "dancegrpo", "flowgrpo", "mixgrpo")
ANCHOR_METHODS = ("dancegrpo-matched", "flowgrpo-matched")
HELDOUT_SMOOTH = 3  # held-out evaluations averaged per point (each is 40 images, fixed noise)


# ---------------------------------------------------------------------------------------------
# Shared with bench/ablation.py: machine description, one training run, smoothing, formatting.


def cpu_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def _proc_stat() -> tuple[int, int] | None:
    """(total, idle + iowait) jiffies over all CPUs, or None where /proc/stat is missing."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields), fields[3] + fields[4]


def cpu_busy_share(seconds: float = 0.5) -> float | None:
    """Share of all CPUs busy over a short sample (before a run: other work skews timings)."""
    first = _proc_stat()
    time.sleep(seconds)
    second = _proc_stat()
    if first is None or second is None:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return 1.0 - idle / max(1, total)


class OtherLoadMeter:
    """Share of the machine's CPU time that other processes used between start() and stop()."""

    def __init__(self) -> None:
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.stat: tuple[int, int] | None = None
        self.cpu = 0.0

    def start(self) -> None:
        self.stat, self.cpu = _proc_stat(), time.process_time()

    def stop(self) -> float | None:
        end, cpu = _proc_stat(), time.process_time()
        if self.stat is None or end is None:
            return None
        total = (end[0] - self.stat[0]) / self.ticks
        busy = total - (end[1] - self.stat[1]) / self.ticks
        return max(0.0, busy - (cpu - self.cpu)) / max(total, 1e-9)


class Recorder(Callback):
    """Keeps every epoch's metrics and stops the run before an epoch would overrun the budget.

    The next epoch is assumed to take as long as the last one; the first always runs.
    """

    def __init__(
        self, budget_s: float | None = None, evaluate: Callable[[int], float] | None = None
    ) -> None:
        self.budget_s = budget_s
        self.evaluate = evaluate
        self.rows: list[dict[str, float]] = []

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        row = {"epoch": float(epoch), **metrics}
        if self.evaluate is not None and epoch > 0:
            # Held-out ODE samples after every epoch, outside the trainer's clock.
            row["heldout"] = self.evaluate(epoch)
        self.rows.append(row)

    def should_stop(self) -> bool:
        if self.budget_s is None or not self.rows:
            return False
        last = self.rows[-1]
        return last["wall_clock"] + last["time/epoch"] > self.budget_s


@dataclass
class RunOutcome:
    """One training run: per-epoch rows and what was measured around them (untimed)."""

    status: str
    rows: list[dict[str, float]]
    images_per_epoch: int
    base_gallery_reward: float | None  # held-out gallery before training
    gallery_reward: float | None  # held-out gallery after training
    others_cpu_share: float | None


def gallery_reward(metrics: dict[str, float], config: RunConfig) -> float:
    """The run's weighted reward on a gallery (`eval/<name>_mean` metrics)."""
    return sum(w * metrics[f"eval/{name}_mean"] for name, w in config.reward_weights.items())


def bench_config(
    preset: str, seed: int, overrides: dict[str, Any], assignments: Sequence[str] = ()
) -> RunConfig:
    """A preset with only training timed: no galleries, trees or checkpoints inside the run."""
    base: dict[str, Any] = {
        "seed": seed,
        "epochs": 10_000_000,  # a budget stops the run unless `overrides` names epochs
        "sample_every": 0,
        "log_tree_every": 0,
        "checkpoint_every": 0,
    }
    base.update(overrides)
    return resolve_config(preset=preset, overrides=base, assignments=assignments)


def train_run(
    config: RunConfig,
    budget_s: float | None = None,
    base_gallery: bool = False,
    final_gallery: bool = True,
    heldout_curve: bool = False,
) -> RunOutcome:
    """Load a fresh model, train until `config.epochs` or the budget, evaluate outside the clock."""
    adapter = load_model_for(config)
    rewards = load_run_rewards(config, adapter.device)
    recorder = Recorder(budget_s)
    trainer = Trainer(config, adapter, rewards, callbacks=[recorder])
    if heldout_curve:

        def evaluate(epoch: int, trainer: Trainer = trainer) -> float:
            return gallery_reward(trainer.sample_gallery(epoch), config)

        recorder.evaluate = evaluate
    base = gallery_reward(trainer.sample_gallery(0), config) if base_gallery else None
    meter = OtherLoadMeter()
    meter.start()
    status = trainer.run()
    others = meter.stop()
    final = None
    if final_gallery:
        final = gallery_reward(trainer.sample_gallery(trainer.state.epoch), config)
    outcome = RunOutcome(
        status=status,
        rows=recorder.rows,
        images_per_epoch=trainer.run_info().images_per_epoch,
        base_gallery_reward=base,
        gallery_reward=final,
        others_cpu_share=others,
    )
    del trainer, adapter, rewards
    gc.collect()
    return outcome


def wait_for_idle(max_wait_s: float, threshold: float = BUSY_WARNING) -> float:
    """Wait (up to `max_wait_s`) until the CPUs are less than `threshold` busy; seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < max_wait_s:
        busy = cpu_busy_share(1.0)
        if busy is None or busy < threshold:
            break
    return time.perf_counter() - started


def quiet_run(
    config: RunConfig,
    report: Callable[[str], None],
    budget_s: float | None = None,
    base_gallery: bool = False,
    retries: int = 0,
    idle_wait_s: float = 0.0,
    heldout_curve: bool = False,
) -> RunOutcome:
    """`train_run` on a machine shared with others: wait for the CPUs to be idle first, and
    repeat a run that other processes disturbed (took > BUSY_WARNING of the CPUs) up to
    `retries` times, keeping the least-disturbed attempt. Decided on load only, never on results.
    """
    best: RunOutcome | None = None
    for attempt in range(retries + 1):
        waited = wait_for_idle(idle_wait_s) if idle_wait_s > 0 else 0.0
        if waited >= 1.5:
            report(f"  (waited {waited:.0f} s for the CPUs to be idle)")
        outcome = train_run(
            config, budget_s=budget_s, base_gallery=base_gallery, heldout_curve=heldout_curve
        )
        share = outcome.others_cpu_share
        if best is None or (share or 0.0) < (best.others_cpu_share or 0.0):
            if best is not None and best.base_gallery_reward is not None:
                outcome.base_gallery_reward = best.base_gallery_reward
            best = outcome
        if share is None or share <= BUSY_WARNING:
            break
        if attempt < retries:
            report(
                f"  (other processes took {100 * share:.0f}% of the CPUs during this "
                f"{config.algorithm} run, seed {config.seed}: repeating it)"
            )
    assert best is not None
    return best


def trailing_mean(values: Sequence[float], window: int) -> list[float]:
    """Mean of the last `window` values at each position (fewer at the start)."""
    out = []
    for i in range(len(values)):
        block = values[max(0, i - window + 1) : i + 1]
        out.append(sum(block) / len(block))
    return out


def first_crossing(xs: Sequence[float], ys: Sequence[float], target: float) -> float:
    """The first x whose y reaches `target`; inf if none does."""
    for x, y in zip(xs, ys, strict=True):
        if y >= target:
            return x
    return math.inf


def full_window_start(epochs: int, window: int) -> int:
    """Index of the first smoothed point that averages a full window (the last one if none does)."""
    return max(0, min(window, epochs) - 1)


def crossing(xs: Sequence[float], smoothed: Sequence[float], target: float, window: int) -> float:
    """The first x where a trailing mean over a FULL window of epochs reaches `target`; inf if
    none does. Points that average fewer epochs (the start of a run) do not count: with 4
    prompts per epoch one lucky epoch of easy prompts would otherwise "reach" the target."""
    if len(xs) < window:
        return math.inf
    return first_crossing(xs[window - 1 :], smoothed[window - 1 :], target)


def value_at(xs: Sequence[float], ys: Sequence[float], x_at: float) -> float | None:
    """y at the last x <= x_at (a step function); None before the first x."""
    found = None
    for x, y in zip(xs, ys, strict=True):
        if x <= x_at + 1e-9:
            found = y
    return found


def spread(values: Sequence[float], fmt: str = "{:.3f}", over: str = "") -> str:
    """'median [min-max]'; inf prints as `over` (e.g. '>60 s'); one value prints alone."""

    def one(v: float) -> str:
        return over if math.isinf(v) else fmt.format(v)

    if not values:
        return "n/a"
    mid = statistics.median(values)
    if len(values) == 1:
        return one(mid)
    return f"{one(mid)} [{one(min(values))}-{one(max(values))}]"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


class Report:
    """Prints lines as they come and keeps them for the .txt copy of the output."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.extend(text.split("\n"))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """A markdown table (pasteable into docs/BENCHMARKS.md)."""
        self("| " + " | ".join(header) + " |")
        self("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            self("| " + " | ".join(row) + " |")

    def save(self, path: Path) -> None:
        path.write_text("\n".join(self.lines) + "\n")


def environment(report: Report) -> dict[str, Any]:
    """Print and return the machine's description and how busy it is before the start."""
    busy = cpu_busy_share()
    env = {
        "torch": torch.__version__,
        "cpu": cpu_description(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_busy_before_start": busy,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    busy_text = "n/a" if busy is None else f"{100 * busy:.0f}%"
    report(
        f"torch {env['torch']} | {env['cpu']} x{env['cpus']} | threads {env['threads']} | "
        f"cuda {env['cuda'] or 'no'} | CPUs busy before start {busy_text} | {env['date']}"
    )
    if busy is not None and busy > BUSY_WARNING:
        report(
            f"WARNING: the CPUs were {100 * busy:.0f}% busy before the start; other work will "
            "skew the timings (rerun when the machine is idle)"
        )
    return env


def add_override_and_output_args(p: argparse.ArgumentParser) -> None:
    """`--set KEY=VALUE` for every run, and `--out` for the results (shared with ablation.py)."""
    p.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run, e.g. --set train.lr=3e-4",
    )
    p.add_argument("--out", default=str(RESULTS), help="folder for the JSON, PNG and text")


def add_shared_machine_args(p: argparse.ArgumentParser) -> None:
    """Options for timing on a machine that other people's work shares."""
    p.add_argument(
        "--retries",
        type=int,
        default=None,
        help="repeat a run during which other processes took > 20%% of the CPUs up to this "
        "many times, keeping the least-disturbed attempt (default 2, 0 with --quick)",
    )
    p.add_argument(
        "--idle-wait",
        type=float,
        default=None,
        help="before each run, wait up to this many seconds for the CPUs to be < 20%% busy "
        "(default 60, 0 with --quick)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: as is)")


def parse_seeds(text: str) -> list[int]:
    seeds = [int(s) for s in text.split(",") if s.strip()]
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds: expected distinct integers like 0,1,2; got {text!r}")
    return seeds


# ---------------------------------------------------------------------------------------------
# The efficiency benchmark


@dataclass
class Settings:
    quick: bool
    budget_s: float
    seeds: list[int]
    methods: list[str]
    preset_family: str
    model: str | None
    smooth: int
    target: float | None
    warmup: bool
    retries: int
    idle_wait: float
    threads: int
    assignments: list[str]
    out: str
    reanalyse: str | None = None
    every_seed: tuple[str, ...] = ("treegrpo", "dancegrpo")


@dataclass
class RunRecord:
    method: str
    seed: int
    status: str
    epochs: int
    curve: dict[str, list[float]]  # per epoch: see `curve_of`
    seconds_per_iteration: float  # median epoch time
    rollout_seconds: float
    update_seconds: float
    trained_edges_per_iteration: float
    model_evals_per_iteration: float
    final_wall_clock: float
    final_reward_smoothed: float
    gallery_reward: float | None
    others_cpu_share: float | None
    time_to_target: float | None = None  # None: not reached within the budget
    images_to_target: float | None = None
    reward_at_equal_wall_clock: float | None = None


@dataclass
class MethodSummary:
    method: str
    label: str
    algorithm: str
    group: str
    images_per_iteration: int
    update_forwards_per_iteration: float
    runs: int
    seconds_per_iteration: list[float] = field(default_factory=list)
    time_to_target: list[float] = field(default_factory=list)  # inf: not reached


def parse_args(argv: Sequence[str] | None) -> Settings:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="8 s budget, 1 seed, no anchors (< 1 min)")
    p.add_argument("--budget", type=float, default=None, help="seconds per run (default 60)")
    p.add_argument("--seeds", default=None, help="comma-separated run seeds (default 0,1,2)")
    p.add_argument(
        "--methods",
        default=",".join(MAIN_METHODS),
        help=f"comma-separated, of {', '.join(METHODS)} (default: the first four)",
    )
    p.add_argument(
        "--anchor-groups",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add DanceGRPO G=12 and Flow-GRPO G=24 rows (default: on, off with --quick)",
    )
    p.add_argument("--preset-family", default="digits", help="presets <family>-<algorithm>")
    p.add_argument(
        "--every-seed",
        default="treegrpo,dancegrpo",
        help="methods run with every seed; the others run the first seed only",
    )
    p.add_argument("--model", default=None, help="model for every run (default: the preset's)")
    p.add_argument("--smooth", type=int, default=5, help="trailing-mean window in epochs")
    p.add_argument(
        "--target", type=float, default=None, help="target reward (default: DanceGRPO's final)"
    )
    p.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one untimed epoch of each method first (default: on, off with --quick)",
    )
    add_shared_machine_args(p)
    add_override_and_output_args(p)
    p.add_argument(
        "--reanalyse",
        metavar="JSON",
        default=None,
        help="train nothing: recompute the figures, plot and text from a results JSON of an "
        "earlier run (its settings are kept except --smooth, --target and --out)",
    )
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    anchors = args.anchor_groups if args.anchor_groups is not None else not args.quick
    if anchors:
        methods += [m for m in ANCHOR_METHODS if m not in methods]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    budget = args.budget if args.budget is not None else (8.0 if args.quick else 60.0)
    if budget <= 0 or args.smooth < 1:
        raise SystemExit("--budget must be > 0 and --smooth >= 1")
    return Settings(
        quick=args.quick,
        budget_s=budget,
        seeds=parse_seeds(args.seeds or ("0" if args.quick else "0,1,2")),
        methods=list(dict.fromkeys(methods)),
        preset_family=args.preset_family,
        model=args.model,
        smooth=args.smooth,
        target=args.target,
        warmup=args.warmup if args.warmup is not None else not args.quick,
        retries=args.retries if args.retries is not None else (0 if args.quick else 2),
        idle_wait=args.idle_wait if args.idle_wait is not None else (0.0 if args.quick else 60.0),
        threads=args.threads,
        assignments=list(args.assignments),
        out=args.out,
        reanalyse=args.reanalyse,
        every_seed=tuple(m.strip() for m in args.every_seed.split(",") if m.strip()),
    )


def method_config(s: Settings, method: Method, seed: int, epochs: int | None = None) -> RunConfig:
    overrides: dict[str, Any] = dict(method.overrides)
    if s.model is not None:
        overrides["model"] = s.model
    if epochs is not None:
        overrides["epochs"] = epochs
    preset = f"{s.preset_family}-{method.algorithm}{method.preset_suffix}"
    return bench_config(preset, seed, overrides, s.assignments)


def group_text(config: RunConfig) -> str:
    if config.algorithm == "treegrpo":
        k, d = config.tree.k, config.tree.depth
        return f"tree k^d = {k}^{d} = {k**d}"
    return f"G = {config.flat.group_size}"


def curve_of(rows: list[dict[str, float]], smooth: int) -> dict[str, list[float]]:
    evals = [r["model_evals"] for r in rows]
    return {
        "epoch": [r["epoch"] for r in rows],
        "wall_clock": [r["wall_clock"] for r in rows],
        "images_seen": [r["images_seen"] for r in rows],
        "reward": [r["reward_mean"] for r in rows],
        "reward_smoothed": trailing_mean([r["reward_mean"] for r in rows], smooth),
        "time_epoch": [r["time/epoch"] for r in rows],
        "time_rollout": [r["time/rollout"] for r in rows],
        "time_update": [r["time/update"] for r in rows],
        "trained_edges": [r["trained_edges"] for r in rows],
        "model_evals": [b - a for a, b in zip([0.0, *evals], evals, strict=False)],
        "window_start": [r["window_start"] for r in rows],
        "heldout": [r.get("heldout", math.nan) for r in rows],
        "heldout_smoothed": trailing_mean(
            [r.get("heldout", math.nan) for r in rows], HELDOUT_SMOOTH
        ),
    }


def record_of(method: str, seed: int, outcome: RunOutcome, smooth: int) -> RunRecord:
    curve = curve_of(outcome.rows, smooth)
    return RunRecord(
        method=method,
        seed=seed,
        status=outcome.status,
        epochs=len(outcome.rows),
        curve=curve,
        seconds_per_iteration=median(curve["time_epoch"]),
        rollout_seconds=median(curve["time_rollout"]),
        update_seconds=median(curve["time_update"]),
        trained_edges_per_iteration=median(curve["trained_edges"]),
        model_evals_per_iteration=median(curve["model_evals"]),
        final_wall_clock=curve["wall_clock"][-1],
        final_reward_smoothed=curve["reward_smoothed"][-1],
        gallery_reward=outcome.gallery_reward,
        others_cpu_share=outcome.others_cpu_share,
    )


def interpolate(xs: Sequence[float], ys: Sequence[float], x: float) -> float | None:
    """Linear interpolation of y at x inside [xs[0], xs[-1]]; None outside."""
    if not xs or x < xs[0] - 1e-9 or x > xs[-1] + 1e-9:
        return None
    for (x0, y0), (x1, y1) in itertools.pairwise(zip(xs, ys, strict=True)):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def median_curve(
    curves: Sequence[tuple[Sequence[float], Sequence[float]]], points: int = 200
) -> tuple[list[float], list[float]]:
    """Median over runs of piecewise-linear curves, on a grid where every run has a value
    (from the latest start to the earliest end)."""
    end = min(xs[-1] for xs, _ in curves)
    start = max(xs[0] for xs, _ in curves)
    if end <= start:
        return [end], [statistics.median(ys[-1] for _, ys in curves)]
    grid = [start + (end - start) * i / (points - 1) for i in range(points)]
    ys = []
    for x in grid:
        at = [interpolate(cx, cy, x) for cx, cy in curves]
        ys.append(statistics.median(v for v in at if v is not None))
    return grid, ys


def plot(
    s: Settings,
    runs: list[RunRecord],
    summaries: dict[str, MethodSummary],
    target: float | None,
    path: Path,
) -> Path:
    by_wall = Panel(
        "held-out reward vs wall-clock",
        "wall-clock seconds (training only)",
        f"held-out reward (mean of {HELDOUT_SMOOTH} evaluations)",
    )
    by_images = Panel(
        "held-out reward vs images seen",
        "images seen",
        f"held-out reward (mean of {HELDOUT_SMOOTH} evaluations)",
    )
    # Rewards rise to the right: the upper left of the time plot stays clear of late, high
    # points; in the images plot the flat runs end early, which leaves the lower right clear.
    by_wall.legend_corner = "upper left"
    for i, name in enumerate(s.methods):
        color = PALETTE[i % len(PALETTE)]
        mine = [r for r in runs if r.method == name]
        if not mine:
            continue
        label = summaries[name].label
        dashed = name in ANCHOR_METHODS
        for panel, key in ((by_wall, "wall_clock"), (by_images, "images_seen")):
            pairs = []
            for r in mine:  # held-out reward, from the first point that averages a full window
                curve = heldout_curve_of(r)
                start = full_window_start(len(curve[key]), HELDOUT_SMOOTH)
                pairs.append((curve[key][start:], curve["heldout_smoothed"][start:]))
            if len(mine) > 1:  # every seed thin and pale, the median bold
                for xs, ys in pairs:
                    panel.series.append(Series(None, xs, ys, color, width=1, alpha=0.35))
            xs, ys = median_curve(pairs)
            legend = f"{label} (median of {len(mine)})" if len(mine) > 1 else label
            panel.series.append(Series(legend, xs, ys, color, width=3, dashed=dashed))
    if target is not None:
        line = HLine(target, f"target {target:.3f} (median over seeds)")
        by_wall.hlines.append(line)
        by_images.hlines.append(line)
    seeds = ",".join(map(str, s.seeds))
    return save_chart(
        [by_wall, by_images],
        path,
        title=(
            f"{s.preset_family}: TreeGRPO vs flat GRPO baselines, {s.budget_s:g} s budget per run, "
            f"seeds {seeds}"
        ),
        footnote=(
            f"Held-out ODE reward (prompts never trained on, fixed noise), mean of the last "
            f"{HELDOUT_SMOOTH} evaluations. Thin: one seed; bold: median over seeds (up to the "
            "shortest run); dashed: matched-budget baselines (G = k^d)."
        ),
    )


def setup(s: Settings) -> tuple[dict[str, RunConfig], dict[str, MethodSummary]]:
    """Every method's config (seed of the first run) and its derived per-iteration figures;
    asserts that the methods share model, reward, prompts, learning rate and sampling."""
    configs = {name: method_config(s, METHODS[name], s.seeds[0]) for name in s.methods}
    return configs, summaries_of(configs)


def summaries_of(configs: dict[str, RunConfig]) -> dict[str, MethodSummary]:
    first = next(iter(configs.values()))
    summaries: dict[str, MethodSummary] = {}
    for name, config in configs.items():
        for key in ("model", "reward", "prompts", "prompts_per_epoch", "eval_prompts"):
            assert getattr(config, key) == getattr(first, key), (name, key)
        assert config.train.lr == first.train.lr, name
        assert config.sampling == first.sampling, name
        per_prompt = (
            config.tree.k**config.tree.depth
            if config.algorithm == "treegrpo"
            else config.flat.group_size
        )
        summaries[name] = MethodSummary(
            method=name,
            label=METHODS[name].label if name in METHODS else name,
            algorithm=config.algorithm,
            group=group_text(config),
            images_per_iteration=config.prompts_per_epoch * per_prompt,
            update_forwards_per_iteration=math.nan,
            runs=0,
        )
    return summaries


def describe_setup(
    s: Settings,
    configs: dict[str, RunConfig],
    summaries: dict[str, MethodSummary],
    report: Report,
) -> None:
    """Derived quantities, printed once before any run."""
    first = next(iter(configs.values()))
    plain = first.to_dict()
    report(
        f"model {first.model} | reward {plain['reward']} | prompts {plain['prompts']} "
        f"({first.prompts_per_epoch}/epoch) | held-out {plain['eval_prompts']} | "
        f"T={first.sampling.steps} cfg={first.sampling.cfg_scale} grid {first.sampling.grid} | "
        f"lr {first.train.lr} | budget {s.budget_s:g} s/run | seeds "
        f"{','.join(map(str, s.seeds))} | smoothing: trailing mean of {s.smooth} epochs"
    )
    for name in s.methods:
        m = summaries[name]
        family = "epsilon" if configs[name].model.endswith("-ddim") else "flow"
        resolved = get_algorithm(configs[name].algorithm).resolve(configs[name], family)
        report(
            f"  {name:<18} {m.group:<22} {m.images_per_iteration:>4} images/iter | "
            f"{resolved.sampling.sde} SDE, eta {resolved.sampling.eta} | "
            f"{resolved.train.minibatches} optimiser steps/iter"
            + (f" | KL {resolved.train.kl_beta}" if resolved.train.kl_beta else "")
        )
    tree_cfg = configs.get("treegrpo")
    flat = [configs[n] for n in s.methods if n in MAIN_METHODS and n != "treegrpo"]
    if tree_cfg is not None and flat:
        report(
            "recipes: each baseline runs its authors' recipe (group size, SDE and eta, noise "
            "sharing, trained steps, advantage normalisation, KL, optimiser steps per iteration; "
            "docs/FIDELITY.md); `-matched` rows give a baseline G = k^d, as many images per "
            "iteration as the tree. Time to target and reward at equal time are read on the "
            f"held-out ODE reward (after every epoch, outside the clock; mean of the last "
            f"{HELDOUT_SMOOTH} evaluations)."
        )


def run_line(r: RunRecord) -> str:
    others = r.others_cpu_share
    held_out = "n/a" if r.gallery_reward is None else f"{r.gallery_reward:.3f}"
    return (
        f"seed {r.seed} {r.method:<14} {r.epochs:>4} epochs {r.final_wall_clock:6.1f} s | s/iter "
        f"{r.seconds_per_iteration:.2f} (rollout {r.rollout_seconds:.2f}, update "
        f"{r.update_seconds:.2f}) | train reward {r.final_reward_smoothed:.3f} | held-out "
        f"{held_out}" + ("" if others is None else f" | others' CPU {100 * others:.0f}%")
    )


def measure(
    s: Settings, report: Report
) -> tuple[dict[str, RunConfig], dict[str, MethodSummary], list[RunRecord], dict[int, float]]:
    """Train every (seed, method) under the budget, methods in turn within each seed."""
    configs, summaries = setup(s)
    describe_setup(s, configs, summaries, report)
    if s.warmup:
        # Thread pools, allocator and kernel caches warm up in the first epochs of a process;
        # one untimed epoch of each method keeps that out of the first timed run.
        started = time.perf_counter()
        for name in s.methods:
            train_run(method_config(s, METHODS[name], s.seeds[0], epochs=1), final_gallery=False)
        report(f"warm-up: one untimed epoch of each method ({time.perf_counter() - started:.0f} s)")
    runs: list[RunRecord] = []
    base_gallery: dict[int, float] = {}
    for index, seed in enumerate(s.seeds):
        for name in s.methods:
            if index > 0 and name not in s.every_seed:
                continue  # methods outside --every-seed run the first seed only
            outcome = quiet_run(
                method_config(s, METHODS[name], seed),
                report,
                budget_s=s.budget_s,
                base_gallery=seed not in base_gallery,
                retries=s.retries,
                idle_wait_s=s.idle_wait,
                heldout_curve=True,
            )
            if outcome.base_gallery_reward is not None:
                base_gallery[seed] = outcome.base_gallery_reward
            runs.append(record_of(name, seed, outcome, s.smooth))
            report(run_line(runs[-1]))
    return configs, summaries, runs, base_gallery


def reload(
    s: Settings, report: Report
) -> tuple[
    Settings,
    dict[str, Any],
    dict[str, RunConfig],
    dict[str, MethodSummary],
    list[RunRecord],
    dict[int, float],
]:
    """The runs of an earlier results JSON, re-smoothed with this invocation's --smooth."""
    assert s.reanalyse is not None
    data = json.loads(Path(s.reanalyse).read_text())
    saved = Settings(**data["settings"])
    saved.smooth, saved.target, saved.out, saved.reanalyse = s.smooth, s.target, s.out, s.reanalyse
    env = data["environment"]
    report(
        f"re-analysis of {s.reanalyse} (measured {env['date']}; torch {env['torch']} | "
        f"{env['cpu']} x{env['cpus']} | threads {env['threads']}); nothing retrained"
    )
    configs = {name: RunConfig.from_dict(c) for name, c in data["configs"].items()}
    summaries = summaries_of(configs)
    describe_setup(saved, configs, summaries, report)
    runs = []
    for raw in data["runs"]:
        run = RunRecord(**raw)
        run.curve["reward_smoothed"] = trailing_mean(run.curve["reward"], saved.smooth)
        run.final_reward_smoothed = run.curve["reward_smoothed"][-1]
        runs.append(run)
        report(run_line(run))
    base_gallery = {int(k): v for k, v in data["base_gallery_reward"].items()}
    return saved, env, configs, summaries, runs, base_gallery


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    s = parse_args(argv)
    if s.threads:
        torch.set_num_threads(s.threads)
    report = Report()
    report("efficiency benchmark: TreeGRPO vs flat GRPO baselines under one wall-clock budget")
    if s.reanalyse:
        s, env, configs, summaries, runs, base_gallery = reload(s, report)
    else:
        env = environment(report)
        configs, summaries, runs, base_gallery = measure(s, report)
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"efficiency-{s.preset_family}{'-quick' if s.quick else ''}"
    return analyse(s, env, configs, summaries, runs, base_gallery, report, out, stem)


def heldout_curve_of(r: RunRecord) -> dict[str, list[float]]:
    """The run's epochs that have a held-out evaluation (all of them in this benchmark)."""
    keep = [i for i, v in enumerate(r.curve.get("heldout", [])) if not math.isnan(v)]
    return {
        key: [r.curve[key][i] for i in keep]
        for key in ("wall_clock", "images_seen", "heldout", "heldout_smoothed")
    }


def held_out_final(r: RunRecord) -> float:
    """Mean of the run's last HELDOUT_SMOOTH held-out evaluations (its final gallery if none)."""
    values = heldout_curve_of(r)["heldout_smoothed"]
    if values:
        return values[-1]
    return r.gallery_reward if r.gallery_reward is not None else math.nan


def analyse(
    s: Settings,
    env: dict[str, Any],
    configs: dict[str, RunConfig],
    summaries: dict[str, MethodSummary],
    runs: list[RunRecord],
    base_gallery: dict[int, float],
    report: Report,
    out: Path,
    stem: str,
) -> dict[str, Any]:
    """Target, time to target, reward at equal wall-clock; tables, verdicts, JSON, PNG, text."""
    dance = [r for r in runs if r.method == "dancegrpo"]
    target = s.target
    target_source = "--target"
    targets: dict[int, float] = {}  # per seed
    gain = math.nan
    if target is not None:
        targets = {r.seed: target for r in runs}
    elif dance and all(r.seed in base_gallery for r in runs):
        # Each seed evaluates on its own held-out noise, so its base level differs (0.74-0.83
        # on digits): the target is the seed's base plus half of DanceGRPO's median held-out
        # gain, a level above where every run of the seed starts that DanceGRPO reaches.
        gain = median([held_out_final(r) - base_gallery[r.seed] for r in dance])
        targets = {seed: base + 0.5 * gain for seed, base in base_gallery.items()}
        target = median(list(targets.values()))
        target_source = (
            f"per seed: its base held-out reward + half of DanceGRPO's median held-out gain "
            f"({gain:+.4f}); median over seeds {target:.4f}"
        )
    equal_wall_clock = min(r.final_wall_clock for r in runs)
    for r in runs:
        curve = heldout_curve_of(r)
        if r.seed in targets:
            goal = targets[r.seed]
            t = crossing(curve["wall_clock"], curve["heldout_smoothed"], goal, HELDOUT_SMOOTH)
            n = crossing(curve["images_seen"], curve["heldout_smoothed"], goal, HELDOUT_SMOOTH)
            r.time_to_target = None if math.isinf(t) else t
            r.images_to_target = None if math.isinf(n) else n
        r.reward_at_equal_wall_clock = value_at(
            curve["wall_clock"], curve["heldout_smoothed"], equal_wall_clock
        )
    for name in s.methods:
        mine = [r for r in runs if r.method == name]
        m = summaries[name]
        m.runs = len(mine)
        m.seconds_per_iteration = [r.seconds_per_iteration for r in mine]
        m.time_to_target = [
            math.inf if r.time_to_target is None else r.time_to_target for r in mine
        ]
        edges = median([r.trained_edges_per_iteration for r in mine])
        k = configs[name].tree.k
        m.update_forwards_per_iteration = edges / k if m.algorithm == "treegrpo" else edges

    def of(name: str, get: Callable[[RunRecord], float | None]) -> list[float]:
        """A figure of every run of `name`; None (time or images to target: never) is inf."""
        values = [get(r) for r in runs if r.method == name]
        return [math.inf if v is None else v for v in values]

    def known(name: str, get: Callable[[RunRecord], float | None]) -> list[float]:
        """A figure of the runs of `name` that have one (reward at T_eq: not after 1 epoch)."""
        return [v for v in (get(r) for r in runs if r.method == name) if v is not None]

    dance_spi = median(of("dancegrpo", lambda r: r.seconds_per_iteration))
    dance_ttt = median(of("dancegrpo", lambda r: r.time_to_target)) if dance else math.nan
    over = f">{s.budget_s:g}"

    def ratio_text(numerator: float, denominator: float) -> str:
        """numerator / denominator; a time that is inf (never reached) only bounds the ratio."""
        if math.isnan(numerator) or math.isnan(denominator):
            return "n/a"
        if math.isinf(numerator) and math.isinf(denominator):
            return "n/a"
        if math.isinf(numerator):  # the baseline took longer than the whole budget
            return f">{s.budget_s / denominator:.2f}x"
        if math.isinf(denominator):  # never reached: the ratio is below baseline / budget
            return f"<{numerator / s.budget_s:.2f}x"
        return f"{numerator / denominator:.2f}x"

    report()
    report(
        f"target reward: {target:.4f} ({target_source})"
        if target is not None
        else "target reward: n/a (no DanceGRPO run and no --target)"
    )
    if base_gallery:
        report(
            "held-out gallery reward of the base model (before training): "
            + spread(list(base_gallery.values()))
        )
    report(f"equal wall-clock T_eq = {equal_wall_clock:.1f} s (the shortest run's end)")
    report(
        "figures: median over seeds [min-max]; time to target in seconds of training, "
        f"'{over}' = not reached within the budget"
    )
    report()
    rows = []
    for name in s.methods:
        m = summaries[name]
        ttt = m.time_to_target
        rows.append(
            [
                name,
                m.group,
                str(m.images_per_iteration),
                spread(m.seconds_per_iteration, "{:.2f}"),
                spread(of(name, lambda r: r.final_reward_smoothed)),
                spread(known(name, lambda r: r.gallery_reward)),
                spread(ttt, "{:.1f}", over) if target is not None else "n/a",
                spread(of(name, lambda r: r.images_to_target), "{:.0f}", "never")
                if target is not None
                else "n/a",
                ratio_text(dance_ttt, median(ttt)) if target is not None else "n/a",
                spread(known(name, lambda r: r.reward_at_equal_wall_clock)),
            ]
        )
    report.table(
        [
            "method",
            "group size",
            "images/iter",
            "s/iter",
            "final train reward",
            "held-out reward (end)",
            "time to target (s)",
            "images to target",
            "speedup vs DanceGRPO (time to target)",
            f"reward at T_eq = {equal_wall_clock:.0f} s",
        ],
        rows,
    )
    report()
    report("profile (medians over epochs, then over seeds):")
    profile = []
    for name in s.methods:
        m = summaries[name]
        spi = median(m.seconds_per_iteration)
        shares = [r.others_cpu_share for r in runs if r.method == name]
        others_known = [o for o in shares if o is not None]
        profile.append(
            [
                name,
                f"{median(of(name, lambda r: r.epochs)):.0f}",
                spread(of(name, lambda r: r.rollout_seconds), "{:.2f}"),
                spread(of(name, lambda r: r.update_seconds), "{:.2f}"),
                f"{median(of(name, lambda r: r.model_evals_per_iteration)):.0f}",
                f"{median(of(name, lambda r: r.trained_edges_per_iteration)):.0f}",
                f"{m.update_forwards_per_iteration:.0f}",
                f"{1000 * median(of(name, lambda r: r.update_seconds)) / m.update_forwards_per_iteration:.1f}",
                ratio_text(dance_spi, spi) if dance else "n/a",
                f"{100 * max(others_known):.0f}%" if others_known else "n/a",
            ]
        )
    report.table(
        [
            "method",
            "epochs in budget",
            "rollout s/iter",
            "update s/iter",
            "model evals/iter",
            "trained edges/iter",
            "update forwards/iter",
            "update ms/forward",
            "s/iter vs DanceGRPO",
            "others' CPU (max)",
        ],
        profile,
    )
    report(
        "model evals: denoiser states evaluated in the rollout (before CFG doubling); update "
        "forwards: states evaluated in the update (a tree node's k children share one forward)."
    )
    busiest = max((r.others_cpu_share or 0.0) for r in runs)
    if busiest > BUSY_WARNING:
        report(
            f"WARNING: other processes took up to {100 * busiest:.0f}% of the CPUs during a run; "
            "timings are skewed"
        )

    tree_vs_dance_ttt = "n/a"
    tree_vs_dance_spi = "n/a"
    if "treegrpo" in summaries and dance:
        tree = summaries["treegrpo"]
        tree_vs_dance_spi = ratio_text(dance_spi, median(tree.seconds_per_iteration))
        matched = tree.images_per_iteration == summaries["dancegrpo"].images_per_iteration
        report()
        if target is not None:
            tree_vs_dance_ttt = ratio_text(dance_ttt, median(tree.time_to_target))
            per_seed = [
                ratio_text(d, t)
                for d, t in zip(
                    summaries["dancegrpo"].time_to_target, tree.time_to_target, strict=True
                )
            ]
            paired = [
                d / t
                for d, t in zip(
                    summaries["dancegrpo"].time_to_target, tree.time_to_target, strict=True
                )
                if math.isfinite(d) and math.isfinite(t) and t > 0
            ]
            tree_ttt = median(tree.time_to_target)
            short = [
                r for r in runs if r.method in ("treegrpo", "dancegrpo") and r.epochs < s.smooth
            ]
            if short:
                verdict = (
                    f"undetermined ({len(short)} runs are shorter than the {s.smooth}-epoch "
                    "smoothing window; use a longer --budget)"
                )
            elif math.isinf(tree_ttt):
                verdict = "MISSED (TreeGRPO's median run never reached the target)"
            elif math.isinf(dance_ttt):  # only a lower bound: budget / tree
                bound = s.budget_s / tree_ttt
                verdict = "MET (lower bound)" if bound >= 2.4 else "undetermined"
            elif dance_ttt / tree_ttt >= 2.4:
                verdict = "MET"
            else:
                verdict = f"MISSED by {100 * (1 - dance_ttt / tree_ttt / 2.4):.0f}%"
            report(
                f"issue target: TreeGRPO reaches the target >= 2.4x sooner than DanceGRPO "
                f"(paper ~4x): {tree_vs_dance_ttt} (ratio of the medians) -> {verdict}; per "
                f"seed: {', '.join(per_seed)}"
                + (
                    f"; median of the per-seed ratios {median(paired):.2f}x"
                    if len(paired) == len(per_seed)
                    else ""
                )
            )
        if "dancegrpo-matched" in summaries:
            matched_spi = median(summaries["dancegrpo-matched"].seconds_per_iteration)
            report(
                "seconds per iteration at matched images (DanceGRPO G = k^d): "
                f"{ratio_text(matched_spi, median(tree.seconds_per_iteration))} lower for TreeGRPO"
            )
        value = dance_spi / median(tree.seconds_per_iteration)
        verdict = "MET" if value >= 2.0 else f"MISSED by {100 * (1 - value / 2.0):.0f}%"
        report(
            "issue target: TreeGRPO seconds per iteration >= 2x lower than DanceGRPO at "
            f"{'matched' if matched else 'UNMATCHED'} images per iteration (paper 2.4x): "
            f"{tree_vs_dance_spi} -> {verdict}"
        )

    results = {
        "settings": asdict(s),
        "environment": env,
        "methods": [asdict(summaries[name]) for name in s.methods],
        "configs": {name: config.to_dict() for name, config in configs.items()},
        "target_reward": target,
        "target_source": target_source,
        "target_by_seed": {str(k): v for k, v in targets.items()},
        "target_gain": gain,
        "base_gallery_reward": {str(k): v for k, v in base_gallery.items()},
        "equal_wall_clock": equal_wall_clock,
        "runs": [asdict(r) for r in runs],
        "tree_vs_dance_time_to_target": tree_vs_dance_ttt,
        "tree_vs_dance_seconds_per_iteration": tree_vs_dance_spi,
    }
    png = plot(s, runs, summaries, target, out / f"{stem}.png")
    (out / f"{stem}.json").write_text(json.dumps(json_safe(results), indent=1) + "\n")
    report(f"wrote {out / f'{stem}.json'}, {png} and {out / f'{stem}.txt'}")
    report(f"tree_vs_dance_time_to_target: {tree_vs_dance_ttt}")
    report(f"tree_vs_dance_seconds_per_iteration: {tree_vs_dance_spi}")
    report.save(out / f"{stem}.txt")
    return results


def json_safe(value: Any) -> Any:
    """JSON has no inf/nan: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


if __name__ == "__main__":
    main()
