"""Rollout throughput: batched tree vs node-by-node tree vs independent trajectories.

Measures images per second for three ways of making k^d leaf images per prompt (paper default
k = 3, d = 3, T = 10: 27 images) with the same model, prompts, schedule and CFG:

    batched       `rollout_trees`: all frontier nodes of all trees in one model call per step
                  (our engine; split into chunks only if `--max-batch` says so).
    node-by-node  `rollout_tree_node_by_node`: depth-first, one node per model call (batch 1,
                  2 rows with CFG), which is how the official TreeGRPO code expands a tree.
    flat          `rollout_flat`: k^d independent SDE trajectories per prompt from the same
                  initial noise (DanceGRPO / Flow-GRPO style), all stepped together.

For each it prints images/s, seconds per prompt, model evaluations per image (states evaluated,
before CFG doubling) and model calls, and speed relative to node-by-node; the last line is
`batched_vs_node_by_node: <ratio>x`. The two tree methods do exactly the same evaluations
(docs/TREEGRPO.md §3), so their ratio is purely what batching buys; the flat method does
k^d T evaluations per prompt and shows what the tree's shared prefix and ODE tails save.

Run (from the repository root):

    .venv/bin/python bench/rollout.py --quick                    # ~10 s on a 2-core CPU
    .venv/bin/python bench/rollout.py                            # default: 4 prompts, 3 repeats
    .venv/bin/python bench/rollout.py --device cuda --dtype bfloat16 --json out.json

What is timed: the rollout call only. Prompts are encoded and noises are drawn once, before any
timing (they are inputs, identical for the two tree methods); each method runs `--warmup` times,
then the methods take turns for `--repeats` rounds and the median time is reported. On CUDA the
device is synchronised before each clock read.

The model is `TinyAdapter` (random init, no download). Default size: width 64, 4 FiLM blocks,
4 latent channels at 16 x 16 (0.2 M parameters, 78 MFLOP per row): SD-style latent channels and a
small but real conv denoiser, where a batch-1 call does real arithmetic rather than being pure
Python overhead, yet the default run takes about 25 s on a 2-core CPU. It is not tuned for the
ratio. On both devices the ratio falls as the model grows (batch 1 wastes less of each call), but
for different reasons and from very different heights:

- CPU: at batch 1 the fixed cost per call (Python, dispatch, thread wake-ups) competes with the
  arithmetic; batching removes that cost but cannot make the arithmetic itself faster, and very
  large batches fall out of cache. Measured on a 2-core Xeon: ~10x for TinyAdapter's own
  8 x 8 toy size (all overhead), ~3.7x at width 32, ~2.1x at the default, ~1.3x at width 128,
  ~1.0x at 32 x 32 latents. `--max-batch 16` (cache-sized chunks) lifts the default to ~2.8x.
- GPU: a batch-1 call of a model this size leaves the device idle (launch-bound), so batching
  wins by a lot (H200, float32: ~60x at the default size); for bigger models batch 1 still cannot
  fill the device, so batching keeps winning (bf16: ~15x at width 256 / 32 x 32 / 8 blocks,
  ~2.7x at width 512 / 64 x 64 / 8 blocks).

Timings on a shared machine are skewed by other work: the header prints how busy the CPUs were
just before the start; rerun when it is not near 0%.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from treegrpo.models.base import Conditioning, ModelAdapter
from treegrpo.models.registry import load_model
from treegrpo.models.tiny import TinyAdapter
from treegrpo.prompts import PROMPT_SETS
from treegrpo.rollout import (
    draw_flat_noise,
    draw_tree_noise,
    rollout_flat,
    rollout_tree_node_by_node,
    rollout_trees,
)
from treegrpo.schedules import Schedule
from treegrpo.tree import TreeShape, leaf_count, model_evaluations

PROMPTS = [
    "a red cube on a wooden table",
    "a watercolor painting of a lighthouse at dawn",
    "two cats sleeping on a blue sofa",
    "a bowl of ramen, studio lighting",
    "an astronaut riding a horse on the moon",
    "a city street in the rain at night",
    "a field of sunflowers under a stormy sky",
    "a robot reading a newspaper in a cafe",
]

METHODS = ("batched", "node-by-node", "flat")


@dataclass(frozen=True)
class Settings:
    quick: bool
    prompts: int
    k: int
    depth: int
    steps: int
    window_start: int
    cfg_scale: float
    eta: float
    repeats: int
    warmup: int
    device: str
    dtype: str
    threads: int
    width: int
    image_size: int
    channels: int
    blocks: int
    max_batch: int
    seed: int
    json_path: str | None
    model: str = "tiny"


@dataclass(frozen=True)
class MethodResult:
    method: str
    seconds: float  # median over repeats, for all prompts
    seconds_all: list[float]
    images: int
    images_per_second: float
    seconds_per_prompt: float
    model_evals: int  # states evaluated, before CFG doubling
    model_calls: int  # forward invocations
    evals_per_image: float
    speed_vs_node_by_node: float


def parse_args(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small run (< 1 min): 2 prompts, 1 repeat")
    p.add_argument("--prompts", type=int, default=None, help="trees per run (default 4, quick 2)")
    p.add_argument("--k", type=int, default=3, help="branching factor")
    p.add_argument("--depth", type=int, default=3, help="SDE window width d")
    p.add_argument("--steps", type=int, default=10, help="denoising steps T")
    p.add_argument("--window-start", type=int, default=0, help="first SDE step s")
    p.add_argument("--cfg-scale", type=float, default=4.5, help="CFG scale (cond+uncond per call)")
    p.add_argument("--eta", type=float, default=0.7, help="SDE noise level")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3, quick 1)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of each method first")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: as is)")
    p.add_argument(
        "--model",
        default="tiny",
        help="tiny (TinyAdapter, sized by --width/--image-size/--channels/--blocks) or a name "
        "load_model knows, e.g. digits (the shipped 2.4 M-parameter SD3-style transformer)",
    )
    p.add_argument("--width", type=int, default=64, help="TinyAdapter conv width")
    p.add_argument("--image-size", type=int, default=16, help="latent height = width")
    p.add_argument("--channels", type=int, default=4, help="latent channels")
    p.add_argument("--blocks", type=int, default=4, help="FiLM blocks")
    p.add_argument("--max-batch", type=int, default=0, help="rows per call, batched/flat (0: all)")
    p.add_argument("--seed", type=int, default=0, help="model init and noise seed")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = Settings(
        quick=args.quick,
        prompts=args.prompts if args.prompts is not None else (2 if args.quick else 4),
        k=args.k,
        depth=args.depth,
        steps=args.steps,
        window_start=args.window_start,
        cfg_scale=args.cfg_scale,
        eta=args.eta,
        repeats=args.repeats if args.repeats is not None else (1 if args.quick else 3),
        warmup=args.warmup,
        device=device,
        dtype=args.dtype,
        threads=args.threads,
        width=args.width,
        image_size=args.image_size,
        channels=args.channels,
        blocks=args.blocks,
        max_batch=args.max_batch,
        seed=args.seed,
        json_path=args.json,
        model=args.model,
    )
    return settings


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{name} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}"


def cpu_busy(seconds: float = 0.5) -> str:
    """Share of all CPUs busy over a short sample before the run; other work skews timings."""

    def read() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total_0, idle_0 = read()
        time.sleep(seconds)
        total_1, idle_1 = read()
    except (OSError, ValueError, IndexError):
        return f"load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    busy = 1.0 - (idle_1 - idle_0) / max(1, total_1 - total_0)
    return f"CPUs busy before start {100 * busy:.0f}%"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> None:
    s = parse_args(argv)
    if s.threads:
        torch.set_num_threads(s.threads)
    if not 1 <= s.prompts <= len(PROMPTS):
        raise SystemExit(f"--prompts must be between 1 and {len(PROMPTS)}")
    if s.repeats < 1 or s.warmup < 0:
        raise SystemExit("--repeats must be at least 1 and --warmup at least 0")
    if s.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    device = torch.device(s.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[s.dtype]

    adapter: ModelAdapter
    if s.model == "tiny":
        adapter = TinyAdapter(
            "flow",
            device=device,
            dtype=dtype,
            image_size=s.image_size,
            channels=s.channels,
            width=s.width,
            blocks=s.blocks,
            seed=s.seed,
        )
        model_line = (
            f"model tiny-random width={s.width} blocks={s.blocks} latent={s.channels}x"
            f"{s.image_size}x{s.image_size}"
        )
    else:
        adapter = load_model(s.model, s.device, s.dtype)
        model_line = f"model {s.model} latent={'x'.join(map(str, adapter.latent_shape))}"
        if s.model.startswith("digits"):
            # Digit prompts, so the model is conditioned as in training.
            PROMPTS[:] = [p for p in PROMPT_SETS["digits"]][::3][: len(PROMPTS)]
    schedule: Schedule = adapter.make_schedule(s.steps)
    shape = TreeShape(k=s.k, depth=s.depth, steps=s.steps, window_start=s.window_start)
    prompts = PROMPTS[: s.prompts]
    cond: Conditioning = adapter.encode_prompts(prompts)
    leaves = leaf_count(s.k, s.depth)
    images = s.prompts * leaves
    parameters = sum(p.numel() for p in adapter.denoiser.parameters())

    # Derived counts, computed once and asserted against every run (docs/TREEGRPO.md §3).
    tree_evals_per_prompt = model_evaluations(s.k, s.depth, s.steps, s.window_start)
    flat_evals_per_prompt = leaves * s.steps
    expected_evals = {
        "batched": s.prompts * tree_evals_per_prompt,
        "node-by-node": s.prompts * tree_evals_per_prompt,
        "flat": s.prompts * flat_evals_per_prompt,
    }
    assert tree_evals_per_prompt == (
        s.window_start
        + (s.k**s.depth - 1) // (s.k - 1)
        + s.k**s.depth * (s.steps - s.window_start - s.depth)
    )

    generator = torch.Generator().manual_seed(s.seed)
    tree_noise = draw_tree_noise(s.prompts, shape, adapter.latent_shape, generator)
    flat_noise = draw_flat_noise(s.prompts, leaves, s.steps, adapter.latent_shape, generator)
    all_sde = torch.ones(s.steps, dtype=torch.bool)  # (T,) SDE at every step

    def run_batched() -> tuple[torch.Tensor, int, int]:
        r = rollout_trees(
            adapter, schedule, prompts, cond, shape, tree_noise, s.cfg_scale, s.eta, s.max_batch
        )
        return r.leaves, r.model_evals, r.model_calls

    def run_node_by_node() -> tuple[torch.Tensor, int, int]:
        r = rollout_tree_node_by_node(
            adapter, schedule, prompts, cond, shape, tree_noise, s.cfg_scale, s.eta
        )
        return r.leaves, r.model_evals, r.model_calls

    def run_flat() -> tuple[torch.Tensor, int, int]:
        r = rollout_flat(
            adapter,
            schedule,
            prompts,
            cond,
            leaves,
            all_sde,
            flat_noise,
            s.cfg_scale,
            s.eta,
            s.max_batch,
        )
        return r.leaves, r.model_evals, r.model_calls

    runners: dict[str, Callable[[], tuple[torch.Tensor, int, int]]] = {
        "batched": run_batched,
        "node-by-node": run_node_by_node,
        "flat": run_flat,
    }

    print("rollout benchmark: batched tree vs node-by-node tree vs independent trajectories")
    print(
        f"torch {torch.__version__} | device {device} ({device_description(device)}) | "
        f"threads {torch.get_num_threads()} | dtype {s.dtype} | {cpu_busy()}"
    )
    print(f"{model_line} params={parameters / 1e6:.3f}M")
    print(
        f"k={s.k} d={s.depth} T={s.steps} s={s.window_start} cfg={s.cfg_scale} eta={s.eta} "
        f"prompts={s.prompts} images={images} ({leaves}/prompt) repeats={s.repeats} "
        f"warmup={s.warmup} max_batch={s.max_batch or 'none'}"
    )
    print(
        f"model evals per prompt: tree s + (k^d-1)/(k-1) + k^d(T-s-d) = {tree_evals_per_prompt} "
        f"({tree_evals_per_prompt / leaves:.2f}/image); flat k^d T = {flat_evals_per_prompt} "
        f"({s.steps:.2f}/image)"
    )

    leaves_of: dict[str, torch.Tensor] = {}
    counts: dict[str, tuple[int, int]] = {}
    times: dict[str, list[float]] = {m: [] for m in METHODS}

    def run_once(method: str) -> float:
        synchronize(device)
        start = time.perf_counter()
        out, evals, calls = runners[method]()
        synchronize(device)
        elapsed = time.perf_counter() - start
        assert evals == expected_evals[method], (method, evals, expected_evals[method])
        leaves_of[method] = out
        counts[method] = (evals, calls)
        return elapsed

    with torch.no_grad():
        for _ in range(s.warmup):
            for method in METHODS:
                run_once(method)
        # Methods take turns within each round, so slow drift (thermals, other load) hits all.
        for _ in range(s.repeats):
            for method in METHODS:
                times[method].append(run_once(method))

    difference = (
        (leaves_of["batched"].float() - leaves_of["node-by-node"].float()).abs().max().item()
    )
    print(f"max |leaf difference| batched vs node-by-node (same noises): {difference:.2e}")

    median = {m: statistics.median(times[m]) for m in METHODS}
    results = []
    for method in METHODS:
        evals, calls = counts[method]
        results.append(
            MethodResult(
                method=method,
                seconds=median[method],
                seconds_all=times[method],
                images=images,
                images_per_second=images / median[method],
                seconds_per_prompt=median[method] / s.prompts,
                model_evals=evals,
                model_calls=calls,
                evals_per_image=evals / images,
                speed_vs_node_by_node=median["node-by-node"] / median[method],
            )
        )

    header = (
        f"{'method':<14}{'images/s':>10}{'s/prompt':>10}{'evals/img':>11}{'calls':>8}"
        f"{'vs node-by-node':>17}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.method:<14}{r.images_per_second:>10.1f}{r.seconds_per_prompt:>10.3f}"
            f"{r.evals_per_image:>11.2f}{r.model_calls:>8d}{r.speed_vs_node_by_node:>16.2f}x"
        )

    ratio = median["node-by-node"] / median["batched"]
    if s.json_path is not None:
        Path(s.json_path).write_text(
            json.dumps(
                {
                    "settings": asdict(s),
                    "torch": torch.__version__,
                    "device": device_description(device),
                    "threads": torch.get_num_threads(),
                    "parameters": parameters,
                    "max_leaf_difference": difference,
                    "results": [asdict(r) for r in results],
                    "batched_vs_node_by_node": ratio,
                },
                indent=2,
            )
            + "\n"
        )
    print(f"batched_vs_node_by_node: {ratio:.2f}x")


if __name__ == "__main__":
    main()
