"""The paper's claims on the digits model, as experiments (treegrpo/config/grid.py grids),
analysed by treegrpo/statistics.py.

Each experiment is a base preset plus axes, expanded into runs exactly as
`POST /api/v1/experiments` expands them. Every run trains in this process with one torch thread
(so its clock, the process CPU seconds of its epochs, `cpu_clock`, is its own work and nothing
else's on a shared machine) until its CPU budget is spent. Between epochs, outside the clock,
every `--eval-every` CPU seconds of training, it is evaluated on the SAME held-out images for
every run (treegrpo/heldout.py: shared noise, `--eval-count` images). The base model is
evaluated once on those images: every target level comes from that shared base.

    .venv/bin/python bench/reproduce.py --experiments methods --seeds 0,1,2
    .venv/bin/python bench/reproduce.py --experiments lora,knobs,k,window,backup,matched
    .venv/bin/python bench/reproduce.py --analyse   # tables and plots from the saved runs

Runs append to `--out`/reproduce-digits.jsonl as they finish (a run already there is skipped,
so an interrupted reproduction resumes). `--analyse` trains nothing: it prints the markdown
tables of docs/BENCHMARKS.md and writes reproduce-<experiment>.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
EVAL_NOISE_SEED = 2026
_SAME_RUNS: dict[str, dict[str, Any]] = {}  # config key -> result, filled from the saved runs

# name -> (base preset, axes without the seed axis, CPU budget per run in s)
EXPERIMENTS: dict[str, tuple[str, dict[str, list[Any]], float]] = {
    # The smoke test's: the random-init test model, seconds.
    "tiny-methods": ("tiny-treegrpo", {"preset": ["tiny-treegrpo", "tiny-dancegrpo"]}, 2.0),
    "methods": (
        "digits-treegrpo",
        {"preset": ["digits-treegrpo", "digits-dancegrpo", "digits-flowgrpo", "digits-mixgrpo"]},
        90.0,
    ),
    "lora": (
        "digits-treegrpo",
        {"train.lora_rank": [4, 16], "train.lr": [1e-4, 1e-3]},
        60.0,
    ),
    # Which knob carries MixGRPO's lead: swap them between the two methods.
    "knobs": (
        "digits-treegrpo",
        {
            "variant": [
                "digits-treegrpo",
                "digits-treegrpo train.minibatches=4",
                "digits-mixgrpo",
                "digits-mixgrpo train.minibatches=2",
            ]
        },
        60.0,
    ),
    "k": ("digits-treegrpo", {"tree.k": [3, 2, 4]}, 60.0),
    "window": ("digits-treegrpo", {"tree.window": ["random", "shift", "fixed"]}, 60.0),
    "backup": (
        "digits-treegrpo",
        {"tree.backup": ["mean", "logprob_softmax", "depth_norm"]},
        60.0,
    ),
    "matched": (
        "digits-treegrpo",
        {
            "preset": [
                "digits-treegrpo",
                "digits-dancegrpo",
                "digits-dancegrpo-matched",
            ]
        },
        60.0,
    ),
}


def variant_cells(axes: dict[str, list[Any]], seeds: list[int]) -> list[Any]:
    """The grid's cells; a `variant` axis ("<preset> key=value ...") is a hand-picked list."""
    from treegrpo.config.grid import GridCell, expand_grid
    from treegrpo.config.resolve import parse_assignment

    if "variant" not in axes:
        return expand_grid({**axes, "seed": seeds})
    cells = []
    for text in axes["variant"]:
        preset, *assignments = text.split()
        overrides = dict(parse_assignment(a) for a in assignments)
        for seed in seeds:
            cells.append(
                GridCell(
                    name=f"{text} seed={seed}",
                    group=text,
                    preset=preset,
                    seed=seed,
                    overrides={**overrides, "seed": seed},
                )
            )
    return cells


def run_cell(
    cell: Any, base_preset: str, budget_cpu: float, eval_count: int, eval_every: float
) -> dict[str, Any]:
    from treegrpo.callbacks import Callback
    from treegrpo.config import resolve_config
    from treegrpo.heldout import heldout_reward
    from treegrpo.models.registry import load_model_for
    from treegrpo.rewards.registry import load_run_rewards
    from treegrpo.trainer import Trainer

    overrides = {
        "epochs": 10_000_000,
        "sample_every": 0,
        "log_tree_every": 0,
        "checkpoint_every": 0,
        **cell.overrides,
    }
    config = resolve_config(preset=cell.preset or base_preset, overrides=overrides)
    key = json.dumps([config.to_dict(), budget_cpu, eval_count, eval_every], sort_keys=True)
    if key in _SAME_RUNS:  # the same run in another experiment (its reference cell): reuse it
        return {**_SAME_RUNS[key], "name": cell.name, "group": cell.group, "reused": True}
    adapter = load_model_for(config)
    rewards = load_run_rewards(config, adapter.device)

    class Budget(Callback):
        def __init__(self, evaluate: Callable[[], float]) -> None:
            self.rows: list[dict[str, float]] = []
            self.evaluate = evaluate
            self.next_eval = eval_every

        def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
            row = {"epoch": float(epoch), **metrics}
            last = metrics["cpu_clock"] + metrics["time/epoch_cpu"] > budget_cpu
            if metrics["cpu_clock"] >= self.next_eval or last:
                row["heldout"] = self.evaluate()
                while self.next_eval <= metrics["cpu_clock"]:
                    self.next_eval += eval_every
            self.rows.append(row)

        def should_stop(self) -> bool:
            if not self.rows:
                return False
            last = self.rows[-1]
            return last["cpu_clock"] + last["time/epoch_cpu"] > budget_cpu

    trainer: Trainer | None = None

    def evaluate() -> float:
        assert trainer is not None
        return heldout_reward(trainer, eval_count, EVAL_NOISE_SEED)

    budget = Budget(evaluate)
    trainer = Trainer(config, adapter, rewards, callbacks=[budget])
    started = time.perf_counter()
    status = trainer.run()
    info = trainer.run_info()
    keep = (
        "epoch",
        "cpu_clock",
        "wall_clock",
        "images_seen",
        "reward_mean",
        "heldout",
        "time/epoch",
        "time/epoch_cpu",
    )
    result = {
        "name": cell.name,
        "group": cell.group,
        "seed": cell.seed,
        "status": status,
        "images_per_epoch": info.images_per_epoch,
        "seconds": time.perf_counter() - started,
        "rows": [{k: r[k] for k in keep if k in r} for r in budget.rows],
        "config_key": key,
    }
    _SAME_RUNS[key] = result
    return result


def base_reward(base_preset: str, eval_count: int) -> float:
    from treegrpo.config import resolve_config
    from treegrpo.heldout import heldout_reward
    from treegrpo.models.registry import load_model_for
    from treegrpo.rewards.registry import load_run_rewards
    from treegrpo.trainer import Trainer

    config = resolve_config(preset=base_preset)
    adapter = load_model_for(config)
    trainer = Trainer(config, adapter, load_run_rewards(config, adapter.device))
    return heldout_reward(trainer, eval_count, EVAL_NOISE_SEED)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} x{os.cpu_count()}, 1 torch thread per run"


def train(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    out = Path(args.out) / "reproduce-digits.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            record = json.loads(line)
            done.add((record["experiment"], record.get("name")))
            if "config_key" in record and not record.get("reused"):
                _SAME_RUNS[record["config_key"]] = record
    seeds = [int(s) for s in args.seeds.split(",")]
    for experiment in args.experiments.split(","):
        base_preset, axes, budget = EXPERIMENTS[experiment]
        budget = args.budget or budget
        if (experiment, "__base__") not in done:
            value = base_reward(base_preset, args.eval_count)
            record = {
                "experiment": experiment,
                "name": "__base__",
                "heldout": value,
                "eval_count": args.eval_count,
                "budget_cpu": budget,
                "machine": machine(),
                "date": time.strftime("%Y-%m-%d %H:%M"),
            }
            with out.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"[{experiment}] base held-out reward {value:.4f}", flush=True)
        cells = variant_cells(axes, seeds)
        if "seed" not in axes and "variant" not in axes:
            # seed-major: every method runs seed 0 before any runs seed 1
            order = {c.name: i for i, c in enumerate(cells)}
            cells.sort(key=lambda c: (c.seed, order[c.name]))
        if args.only:
            cells = [c for c in cells if c.group in args.only.split(",")]
        for cell in cells:
            if (experiment, cell.name) in done:
                continue
            result = run_cell(cell, base_preset, budget, args.eval_count, args.eval_every)
            result["experiment"] = experiment
            with out.open("a") as f:
                f.write(json.dumps(result) + "\n")
            rows = result["rows"]
            heldout = [r["heldout"] for r in rows if "heldout" in r]
            print(
                f"[{experiment}] {cell.name}: {len(rows)} epochs, "
                f"{rows[-1]['cpu_clock']:.0f} CPU-s, {rows[-1]['wall_clock']:.0f} s wall, "
                f"held-out {heldout[-1]:.3f} ({result['seconds']:.0f} s with evaluation)",
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--experiments", default="methods", help=f"comma list of {list(EXPERIMENTS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget", type=float, default=0.0, help="CPU s per run (0: per experiment)")
    p.add_argument("--eval-count", type=int, default=96, help="held-out images per evaluation")
    p.add_argument("--eval-every", type=float, default=15.0, help="CPU s of training between evals")
    p.add_argument("--only", default="", help="comma list of groups to run (default: all)")
    p.add_argument("--analyse", action="store_true", help="tables and plots from saved runs")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.analyse:
        from reproduce_report import analyse

        analyse(Path(args.out) / "reproduce-digits.jsonl", Path(args.out))
        return
    train(args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
