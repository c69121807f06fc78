"""Tables and plots of bench/reproduce.py's runs, through treegrpo/statistics.py.

    .venv/bin/python bench/reproduce.py --analyse [--out bench/results]

Reads `reproduce-digits.jsonl` (every run's per-epoch rows and each experiment's shared base
evaluation), builds one `RunPoints` per run (step 0: the base model on every clock at zero) and
prints, per experiment, the grid (final held-out reward, CPU and wall seconds per iteration, CPU
seconds to 25/50/75/90% of the gain) and the paired ratios of the first group against the
others, as markdown; writes reproduce-<experiment>.png (reward against CPU seconds and against
images seen: median lines, thin per-seed lines).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from plotting import PALETTE, HLine, Panel, Series, save_chart

from treegrpo.statistics import HELDOUT, RunPoints, experiment_statistics, summary_text


def load(path: Path) -> dict[str, dict[str, Any]]:
    """experiment -> {"base": record, "runs": [record, ...]} (a run saved twice: the last)."""
    experiments: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        entry = experiments.setdefault(record["experiment"], {"base": None, "runs": {}})
        if record["name"] == "__base__":
            entry["base"] = record
        else:
            entry["runs"][record["name"]] = record
    return experiments


def run_points(record: dict[str, Any], base: float) -> RunPoints:
    points: dict[int, dict[str, float]] = {
        0: {HELDOUT: base, "cpu_clock": 0.0, "wall_clock": 0.0, "images_seen": 0.0}
    }
    for row in record["rows"]:
        point = {k: float(v) for k, v in row.items() if k != "epoch"}
        if "heldout" in point:
            point[HELDOUT] = point.pop("heldout")
        points[int(row["epoch"])] = point
    return RunPoints(record["name"], record["group"], record["seed"], record["status"], points)


def report(name: str, entry: dict[str, Any], out: Path) -> list[str]:
    base_record = entry["base"]
    base = float(base_record["heldout"])
    runs = [run_points(r, base) for r in entry["runs"].values()]
    # a run that never reached a level had its whole CPU budget: it counts at the budget
    stats = experiment_statistics(runs, budgets={"cpu_clock": float(base_record["budget_cpu"])})
    lines = [
        f"### {name}",
        "",
        f"base held-out reward {base:.4f} ({base_record['eval_count']} shared-noise images); "
        f"best group's median final {stats['best_reward']:.4f}; targets: "
        + ", ".join(f"{float(k) * 100:.0f}% = {v:.4f}" for k, v in stats["targets"].items()),
        "",
    ]
    levels = list(stats["targets"])
    head = " | ".join(f"CPU s to {float(k) * 100:.0f}%" for k in levels)
    lines.append(f"| group | seeds | final held-out | CPU s/iter | wall s/iter | {head} |")
    lines.append("|" + "---|" * (5 + len(levels)))
    for g in stats["groups"]:
        cells = " | ".join(summary_text(g["time_to_target"][k]["cpu_clock"], 1) for k in levels)
        lines.append(
            f"| {g['group']} | {len(g['runs'])} | {summary_text(g['final_reward'])} | "
            f"{summary_text(g['cpu_seconds_per_iteration'], 2)} | {summary_text(g['seconds_per_iteration'], 2)} "
            f"| {cells} |"
        )
    ratios = [r for r in stats["ratios"] if r["clock"] == "cpu_clock"]
    if ratios:
        lines += [
            "",
            f"Paired time-to-target ratios on the CPU clock ({stats['reference_group']}'s time "
            "against each group's, seed by seed; > 1: it is sooner; 95% bootstrap interval over "
            "seeds; `b` = pairs where one run never reached the target, counted at its budget):",
            "",
            "| against | " + " | ".join(f"{float(k) * 100:.0f}%" for k in levels) + " |",
            "|" + "---|" * (1 + len(levels)),
        ]
        for group in dict.fromkeys(r["group"] for r in ratios):
            cells = []
            for level in levels:
                r = next(x for x in ratios if x["group"] == group and f"{x['level']:g}" == level)
                if r["ratio"] is None:
                    cells.append("neither reached")
                    continue
                seeds = ", ".join(f"{v:.2f}" for v in r["per_seed"].values())
                bound = f", b={r['censored']}" if r["censored"] else ""
                cells.append(f"{r['ratio']:.2f}x [{r['low']:.2f}-{r['high']:.2f}] ({seeds}{bound})")
            lines.append(f"| {group} | " + " | ".join(cells) + " |")
    lines += ["", f"Pareto front (CPU s/iter against final reward): {', '.join(stats['pareto'])}"]
    plot(name, runs, stats, out / f"reproduce-{name}.png")
    lines += ["", f"![{name}](../bench/results/reproduce-{name}.png)", ""]
    return lines


def plot(name: str, runs: list[RunPoints], stats: dict[str, Any], path: Path) -> None:
    panels = []
    for clock, label in (("cpu_clock", "CPU seconds of training"), ("images_seen", "images seen")):
        panel = Panel(f"{name}: held-out reward vs {label}", label, "held-out reward")
        for i, group in enumerate(stats["groups"]):
            colour = PALETTE[i % len(PALETTE)]
            for run in runs:
                if run.group == group["group"]:
                    xs, ys = run.curve(clock)
                    panel.series.append(Series(None, xs, ys, colour, width=1, alpha=0.35))
            band = group["curves"][clock]
            pts = [(x, m) for x, m in zip(band["x"], band["median"], strict=True) if m is not None]
            if pts:
                panel.series.append(
                    Series(group["group"][:40], [p[0] for p in pts], [p[1] for p in pts], colour, 3)
                )
        for level, value in stats["targets"].items():
            panel.hlines.append(HLine(value, f"{float(level) * 100:.0f}%"))
        panels.append(panel)
    save_chart(panels, path, title=f"digits reproduction: {name}")


def analyse(jsonl: Path, out: Path) -> None:
    experiments = load(jsonl)
    lines: list[str] = []
    for name, entry in experiments.items():
        if entry["base"] is None or not entry["runs"]:
            continue
        lines += report(name, entry, out)
    text = "\n".join(lines)
    print(text)
    (out / "reproduce-digits.md").write_text(text + "\n")
