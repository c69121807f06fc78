"""Ablation of TreeGRPO's tree: branching factor k and SDE-window schedule (paper Tables 3-4).

Runs TreeGRPO on `<family>-treegrpo` (the shipped `digits` model by default) for a fixed number
of epochs per configuration, all with the same seeds, prompts, reward and learning rate:

    Table 3 (branching)  k = 2, 3, 4 at d = 3, window random (the paper's)
    Table 4 (window)     random (paper), shift (the official schedule compressed: start 0,
                         one step later every epoch instead of every 50, then it stays at
                         the last start T - d - 1), fixed (start 0), all at k = 3, d = 3

k = 3 with the random window is one run shared by both tables. k = 4 at d = 3 makes 64 leaves per
tree against 27 (more images per iteration), and k = 2 makes 8, as in the paper: rows are compared
at equal epochs, not at equal images or time. With the same seed every configuration trains on
the same prompts in the same order, so the training rewards of equal epochs are comparable.

Reported per configuration (medians over seeds with [min-max] when there are several):
- final training reward: the trailing mean of `reward_mean` over the last `--smooth` epochs (5);
- held-out reward: the gallery reward (`Trainer.sample_gallery`, held-out prompt phrasing, fixed
  noise) after training, measured outside the clock; the base model's is printed above the tables;
- seconds per iteration: the median epoch time, with its rollout / update split.

Run (from the repository root):

    .venv/bin/python bench/ablation.py --quick     # 2 epochs per configuration, < 1 min
    .venv/bin/python bench/ablation.py             # 20 epochs x 5 configurations, ~5 min on 2 cores
    .venv/bin/python bench/ablation.py --seeds 0,1,2

Writes `ablation-<family>[-quick].{json,png,txt}` to `--out` (default bench/results).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from efficiency import (
    Report,
    add_override_and_output_args,
    add_shared_machine_args,
    bench_config,
    curve_of,
    environment,
    json_safe,
    median,
    median_curve,
    parse_seeds,
    quiet_run,
    spread,
)
from plotting import PALETTE, Panel, Series, save_chart

# The paper's Table 3 (SD3.5-M, HPS v2.1, 8 x A100): k at d = 3 -> (HPS, seconds per iteration).
PAPER_TABLE_3 = {2: (0.3271, 39.4), 3: (0.3735, 70.0), 4: (0.3822, 126.0)}


@dataclass(frozen=True)
class Ablation:
    name: str
    k: int
    depth: int
    window: str
    overrides: tuple[tuple[str, Any], ...] = ()


CONFIGS: dict[str, Ablation] = {
    a.name: a
    for a in (
        Ablation("k2", 2, 3, "random"),
        Ablation("k3", 3, 3, "random"),
        Ablation("k4", 4, 3, "random"),
        Ablation(
            "shift",
            3,
            3,
            "shift",
            (("tree.window_start", 0), ("tree.shift_every", 1), ("tree.shift_by", 1)),
        ),
        Ablation("fixed", 3, 3, "fixed", (("tree.window_start", 0),)),
    )
}
BRANCHING = ("k2", "k3", "k4")
WINDOWS = ("k3", "shift", "fixed")  # k3 is the random window


@dataclass
class Settings:
    quick: bool
    epochs: int
    seeds: list[int]
    configs: list[str]
    preset_family: str
    model: str | None
    smooth: int
    retries: int
    idle_wait: float
    threads: int
    assignments: list[str]
    out: str


@dataclass
class AblationRun:
    config: str
    seed: int
    epochs: int
    images_per_iteration: int
    curve: dict[str, list[float]]
    final_reward_smoothed: float
    gallery_reward: float | None
    seconds_per_iteration: float
    rollout_seconds: float
    update_seconds: float
    others_cpu_share: float | None


def parse_args(argv: Sequence[str] | None) -> Settings:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="2 epochs per configuration (< 1 min)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 20)")
    p.add_argument("--seeds", default="0", help="comma-separated run seeds (default 0)")
    p.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated, of {', '.join(CONFIGS)} (default: all)",
    )
    p.add_argument("--preset-family", default="digits", help="preset <family>-treegrpo")
    p.add_argument("--model", default=None, help="model for every run (default: the preset's)")
    p.add_argument("--smooth", type=int, default=5, help="trailing-mean window in epochs")
    add_shared_machine_args(p)
    add_override_and_output_args(p)
    args = p.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown or not configs:
        raise SystemExit(f"--configs: unknown {unknown}; known: {', '.join(CONFIGS)}")
    epochs = args.epochs if args.epochs is not None else (2 if args.quick else 20)
    if epochs < 1 or args.smooth < 1:
        raise SystemExit("--epochs and --smooth must be >= 1")
    return Settings(
        quick=args.quick,
        epochs=epochs,
        seeds=parse_seeds(args.seeds),
        configs=list(dict.fromkeys(configs)),
        preset_family=args.preset_family,
        model=args.model,
        smooth=args.smooth,
        retries=args.retries if args.retries is not None else (0 if args.quick else 2),
        idle_wait=args.idle_wait if args.idle_wait is not None else (0.0 if args.quick else 60.0),
        threads=args.threads,
        assignments=list(args.assignments),
        out=args.out,
    )


def run_config(s: Settings, ablation: Ablation, seed: int) -> Any:
    overrides: dict[str, Any] = {
        "epochs": s.epochs,
        "tree.k": ablation.k,
        "tree.depth": ablation.depth,
        "tree.window": ablation.window,
        **dict(ablation.overrides),
    }
    if s.model is not None:
        overrides["model"] = s.model
    return bench_config(f"{s.preset_family}-treegrpo", seed, overrides, s.assignments)


def window_text(a: Ablation) -> str:
    if a.window == "shift":
        return "shift (start 0, +1 step per epoch, then stays at T - d - 1)"
    if a.window == "fixed":
        return "fixed (start 0)"
    return "random (truncated geometric, r = 0.5)"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    s = parse_args(argv)
    if s.threads:
        torch.set_num_threads(s.threads)
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"ablation-{s.preset_family}{'-quick' if s.quick else ''}"
    report = Report()
    report("TreeGRPO ablation: branching factor k and window schedule (paper Tables 3-4)")
    env = environment(report)
    configs = {name: run_config(s, CONFIGS[name], s.seeds[0]) for name in s.configs}
    first = next(iter(configs.values()))
    report(
        f"model {first.model} | reward {first.to_dict()['reward']} | prompts "
        f"{first.to_dict()['prompts']} ({first.prompts_per_epoch}/epoch) | T="
        f"{first.sampling.steps} cfg={first.sampling.cfg_scale} | lr {first.train.lr} | "
        f"{s.epochs} epochs per run | seeds {','.join(map(str, s.seeds))} | final reward: "
        f"trailing mean of the last {s.smooth} epochs"
    )

    runs: list[AblationRun] = []
    base_gallery: dict[int, float] = {}
    for seed in s.seeds:
        for name in s.configs:
            config = run_config(s, CONFIGS[name], seed)
            outcome = quiet_run(
                config,
                report,
                base_gallery=seed not in base_gallery,
                retries=s.retries,
                idle_wait_s=s.idle_wait,
            )
            if outcome.base_gallery_reward is not None:
                base_gallery[seed] = outcome.base_gallery_reward
            curve = curve_of(outcome.rows, s.smooth)
            run = AblationRun(
                config=name,
                seed=seed,
                epochs=len(outcome.rows),
                images_per_iteration=outcome.images_per_epoch,
                curve=curve,
                final_reward_smoothed=curve["reward_smoothed"][-1],
                gallery_reward=outcome.gallery_reward,
                seconds_per_iteration=median(curve["time_epoch"]),
                rollout_seconds=median(curve["time_rollout"]),
                update_seconds=median(curve["time_update"]),
                others_cpu_share=outcome.others_cpu_share,
            )
            runs.append(run)
            others = run.others_cpu_share
            report(
                f"seed {seed} {name:<6} {run.epochs} epochs | s/iter "
                f"{run.seconds_per_iteration:.2f} (rollout {run.rollout_seconds:.2f}, update "
                f"{run.update_seconds:.2f}) | train reward {run.final_reward_smoothed:.3f} | "
                f"held-out {run.gallery_reward:.3f}"
                + ("" if others is None else f" | others' CPU {100 * others:.0f}%")
            )

    def values(name: str, key: str) -> list[float]:
        return [getattr(r, key) for r in runs if r.config == name and getattr(r, key) is not None]

    summary: dict[str, dict[str, Any]] = {}
    for name in s.configs:
        a = CONFIGS[name]
        summary[name] = {
            "k": a.k,
            "depth": a.depth,
            "window": a.window,
            "leaves_per_tree": a.k**a.depth,
            "images_per_iteration": values(name, "images_per_iteration")[0],
            "final_reward_smoothed": values(name, "final_reward_smoothed"),
            "gallery_reward": values(name, "gallery_reward"),
            "seconds_per_iteration": values(name, "seconds_per_iteration"),
            "rollout_seconds": values(name, "rollout_seconds"),
            "update_seconds": values(name, "update_seconds"),
        }

    def cells(name: str) -> list[str]:
        row = summary[name]
        return [
            str(row["leaves_per_tree"]),
            str(row["images_per_iteration"]),
            spread(row["final_reward_smoothed"]),
            spread(row["gallery_reward"]),
            spread(row["seconds_per_iteration"], "{:.2f}"),
            f"{median(row['rollout_seconds']):.2f} / {median(row['update_seconds']):.2f}",
        ]

    columns = [
        "leaves/tree",
        "images/iter",
        f"train reward (last {min(s.smooth, s.epochs)} epochs)",
        "held-out reward",
        "s/iter",
        "rollout / update s",
    ]
    report()
    if base_gallery:
        report(
            "held-out gallery reward of the base model (before training): "
            + spread(list(base_gallery.values()))
        )
    report(
        f"after {s.epochs} epochs; figures: median over seeds [min-max]"
        if len(s.seeds) > 1
        else f"after {s.epochs} epochs, seed {s.seeds[0]} (one seed: read differences below "
        "~0.02 as noise)"
    )
    branching = [n for n in BRANCHING if n in summary]
    if branching:
        report()
        report("Table 3 shape: branching factor k at d = 3 (window random)")
        k3_spi = median(summary["k3"]["seconds_per_iteration"]) if "k3" in summary else None
        rows = []
        for name in branching:
            a = CONFIGS[name]
            paper_reward, paper_spi = PAPER_TABLE_3[a.k]
            ours = median(summary[name]["seconds_per_iteration"])
            relative = "n/a" if k3_spi is None else f"{ours / k3_spi:.2f}"
            rows.append(
                [
                    str(a.k),
                    str(a.depth),
                    *cells(name),
                    relative,
                    f"{paper_reward:.4f} / {paper_spi:.1f} s ({paper_spi / PAPER_TABLE_3[3][1]:.2f})",
                ]
            )
        report.table(["k", "d", *columns, "s/iter vs k=3", "paper: HPS / s/iter (vs k=3)"], rows)
        sizes = ", ".join(
            f"k={CONFIGS[n].k}: {summary[n]['leaves_per_tree']} leaves per tree, "
            f"{summary[n]['images_per_iteration']} images per iteration"
            for n in branching
        )
        report(
            f"{sizes}: larger k sees more images per iteration, as in the paper; rows compare equal epochs."
        )
    windows = [n for n in WINDOWS if n in summary]
    if windows:
        report()
        report("Table 4 shape: SDE-window schedule at k = 3, d = 3")
        report.table(
            ["window", "k", "d", *columns],
            [[window_text(CONFIGS[n]), "3", "3", *cells(n)] for n in windows],
        )

    verdicts: dict[str, Any] = {}
    if all(n in summary for n in BRANCHING):
        report()
        for key, label in (
            ("final_reward_smoothed", "final training reward"),
            ("gallery_reward", "held-out reward"),
        ):
            k2, k3, k4 = (median(summary[n][key]) for n in BRANCHING)
            holds = k2 < k3 <= k4
            verdicts[key] = holds
            report(
                f"paper direction k=2 < k=3 <= k=4 on {label}: {k2:.3f}, {k3:.3f}, {k4:.3f} -> "
                f"{'holds' if holds else 'does NOT hold'}"
            )

    plot_path = out / f"{stem}.png"
    panels = []
    for title, names in (
        ("branching factor (d = 3, random window)", branching),
        ("window schedule (k = 3, d = 3)", windows),
    ):
        if not names:
            continue
        panel = Panel(title, "epoch", f"training reward (trailing mean, {s.smooth} epochs)")
        for i, name in enumerate(names):
            mine = [r for r in runs if r.config == name]
            pairs = [(r.curve["epoch"], r.curve["reward_smoothed"]) for r in mine]
            xs, ys = median_curve(pairs, points=max(2, s.epochs))
            a = CONFIGS[name]
            label = f"k={a.k}, d={a.depth}" if title.startswith("branching") else a.window
            panel.series.append(Series(label, xs, ys, PALETTE[i % len(PALETTE)], width=3))
        panels.append(panel)
    save_chart(
        panels,
        plot_path,
        title=f"TreeGRPO ablation on {first.model}, seeds {','.join(map(str, s.seeds))}",
        footnote="median over seeds of the smoothed training reward on the training prompts",
    )

    results = {
        "settings": asdict(s),
        "environment": env,
        "configs": {name: configs[name].to_dict() for name in s.configs},
        "base_gallery_reward": {str(k): v for k, v in base_gallery.items()},
        "summary": summary,
        "paper_table_3": {str(k): v for k, v in PAPER_TABLE_3.items()},
        "paper_direction_holds": verdicts,
        "runs": [asdict(r) for r in runs],
    }
    (out / f"{stem}.json").write_text(json.dumps(json_safe(results), indent=1) + "\n")
    report(f"wrote {out / f'{stem}.json'}, {plot_path} and {out / f'{stem}.txt'}")
    report.save(out / f"{stem}.txt")
    return results


if __name__ == "__main__":
    main()
