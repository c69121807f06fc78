"""Replicated vs FSDP2-sharded policy update on the FLUX.1-dev transformer: per-rank peak memory
and seconds per optimizer step, beside the memory arithmetic of a full fine-tune.

Each mode runs on N ranks through torch.distributed.run (this script starts them): the
FluxTransformer2DModel of FLUX.1-dev's config (11.9 B parameters, random init: the weights do not
change memory or speed), float32 parameters, bf16 autocast on the GPU, one micro-batch of
`--batch` latents at `--side` pixels with 512 text tokens, AdamW. `replicated` is what
`train.sharding: none` does (a full model per rank, gradients summed with
`treegrpo.distributed.all_reduce_gradients`); `sharded` is `train.sharding: fsdp` as
`treegrpo train` loads it: only rank 0 builds the weights, the other ranks build the
architecture on the meta device, every rank shards (`treegrpo.sharding.shard_denoiser`: one
FSDP2 unit per block, SUM reduction) and rank 0's weights are broadcast into the shards
(`sharding.fill_shards`). `sharded-whole` builds the whole model on every rank before sharding
it (the loading before the meta path; not a default mode, for comparison). A mode that does not
fit prints OOM.

    .venv/bin/python bench/sharding.py --quick          # tiny FLUX config, 2 gloo ranks, CPU
    .venv/bin/python bench/sharding.py --quick --config small --modes replicated,sharded,sharded-whole
    python bench/sharding.py --ranks 8                   # FLUX.1-dev on 8 GPUs (needs ~50 GB each)

Per-rank peak: torch.cuda.max_memory_allocated on a GPU; on the CPU the process's peak resident
set (ru_maxrss: torch, Python and the model together), so only the difference between the modes
means something there. "loaded" is the host peak RSS once the model is loaded (and sharded),
before the first step, on rank 0 and on the other ranks: what N ranks cost the machine's RAM
while they load. The arithmetic (docs/BENCHMARKS.md "Sharding") is printed beside it for the
model actually built.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GB = 1e9
# FLUX.1-dev's transformer config (black-forest-labs/FLUX.1-dev transformer/config.json).
FLUX_DEV: dict[str, Any] = {
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
# The same architecture, small enough for a 2-core CPU (9.3 M parameters).
FLUX_TINY: dict[str, Any] = {
    "in_channels": 16,
    "num_layers": 2,
    "num_single_layers": 4,
    "attention_head_dim": 64,
    "num_attention_heads": 4,
    "joint_attention_dim": 256,
    "pooled_projection_dim": 64,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 24, 24),
}
# Wide enough (FLUX.1-dev's head size, 4 heads; 34 M parameters, 0.14 GB in float32) that the
# model, not torch itself, shows in a CPU process's resident set.
FLUX_SMALL: dict[str, Any] = {
    **FLUX_DEV,
    "num_layers": 2,
    "num_single_layers": 4,
    "num_attention_heads": 4,
    "joint_attention_dim": 512,
}
CONFIGS = {"tiny": FLUX_TINY, "small": FLUX_SMALL, "dev": FLUX_DEV}


def arithmetic(params: float, ranks: int) -> list[str]:
    """Bytes of training state per rank (docs/BENCHMARKS.md "Sharding"), for `params` weights."""
    gb = params / GB
    return [
        f"parameters: {params / 1e9:.3f} B",
        f"replicated, fp32 weights + grads + AdamW m,v (16 B/param): {16 * gb:.3f} GB per rank",
        f"replicated, bf16 weights + fp32 masters (weights_dtype bfloat16, 20 B/param): "
        f"{20 * gb:.3f} GB per rank",
        f"sharded over {ranks} (16 B/param / {ranks}): {16 * gb / ranks:.3f} GB per rank, plus "
        "the unsharded blocks in flight and the activations",
    ]


def local_state_bytes(model: Any, optimizer: Any) -> int:
    """Bytes of this rank's weights and AdamW state, counted from the tensors it holds (a
    sharded tensor counts its local shard): the device-independent part of the peak."""
    from torch.distributed.tensor import DTensor

    def local(tensor: Any) -> Any:
        return tensor.to_local() if isinstance(tensor, DTensor) else tensor

    tensors = [local(p) for p in model.parameters()]
    for state in optimizer.state.values():
        tensors += [local(v) for v in state.values() if getattr(v, "dim", lambda: 0)() > 0]
    return sum(t.numel() * t.element_size() for t in tensors)


def worker(args: argparse.Namespace) -> None:
    import torch
    from diffusers import FluxTransformer2DModel

    from treegrpo.distributed import (
        all_reduce_gradients,
        destroy_process_group,
        init_process_group,
        rank_device,
        ranks_from_env,
    )
    from treegrpo.sharding import fill_shards, full_norm, full_state, shard_denoiser

    ranks = ranks_from_env(os.environ)
    cuda = torch.cuda.is_available() and not args.quick
    device = rank_device(torch.device("cuda" if cuda else "cpu"), ranks)
    init_process_group(ranks, device)
    config = CONFIGS[args.config]
    torch.manual_seed(0)
    result: dict[str, Any] = {"rank": ranks.rank, "mode": args.mode}
    try:
        if args.mode == "sharded" and not ranks.is_main:
            # As treegrpo train loads a sharded run: the architecture only, no weights.
            with torch.device("meta"):
                model = FluxTransformer2DModel(**config)
        else:
            model = FluxTransformer2DModel(**config).to(device)
        result["params"] = sum(p.numel() for p in model.parameters())
        if args.mode == "sharded":
            loaded = full_state(model)  # rank 0's weights; {} on the other ranks
            shard_denoiser(model, device, torch.bfloat16 if cuda else None)
            fill_shards(model, loaded, device)
            del loaded
        elif args.mode == "sharded-whole":
            shard_denoiser(model, device, torch.bfloat16 if cuda else None)
        result["load_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=cuda)
        tokens = (args.side // 16) ** 2  # VAE /8, then 2x2 patches
        text = 16 if args.quick else 512
        batch = args.batch

        def step() -> float:
            inputs = {
                "hidden_states": torch.randn(batch, tokens, config["in_channels"], device=device),
                "encoder_hidden_states": torch.randn(
                    batch, text, config["joint_attention_dim"], device=device
                ),
                "pooled_projections": torch.randn(
                    batch, config["pooled_projection_dim"], device=device
                ),
                "timestep": torch.full((batch,), 0.5, device=device),
                "guidance": torch.full((batch,), 3.5, device=device),
                "img_ids": torch.zeros(tokens, 3, device=device),
                "txt_ids": torch.zeros(text, 3, device=device),
            }
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                out = model(**inputs, return_dict=False)[0]
            out.float().pow(2).mean().backward()
            if args.mode == "replicated":
                all_reduce_gradients(model.parameters())
            norm = full_norm(torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return norm

        step()  # warm-up: allocates AdamW's moments
        result["state_gb"] = local_state_bytes(model, optimizer) / GB
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(args.iters):
            step()
        if cuda:
            torch.cuda.synchronize()
        result["s_per_iter"] = (time.perf_counter() - started) / args.iters
        result["peak_gb"] = (
            torch.cuda.max_memory_allocated(device) / GB
            if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB
        )
        result["peak_kind"] = "cuda max_memory_allocated" if cuda else "CPU peak RSS"
    except torch.OutOfMemoryError:
        result["oom"] = True
    Path(args.result_dir, f"{args.mode}.rank{ranks.rank}.json").write_text(json.dumps(result))
    destroy_process_group()


def launch(args: argparse.Namespace, mode: str, result_dir: str) -> list[dict[str, Any]]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nnodes", "1", "--nproc_per_node", str(args.ranks), __file__, "--worker"]
    command += ["--mode", mode, "--result-dir", result_dir, "--ranks", str(args.ranks)]
    command += ["--side", str(args.side), "--batch", str(args.batch), "--iters", str(args.iters)]
    command += ["--config", args.config, *(["--quick"] if args.quick else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if args.quick:
        env["GLOO_SOCKET_IFNAME"] = "lo"
    subprocess.run(command, check=True, env=env, capture_output=args.quick)
    files = sorted(Path(result_dir).glob(f"{mode}.rank*.json"))
    return [json.loads(p.read_text()) for p in files]


def report(mode: str, rows: list[dict[str, Any]]) -> str:
    if any(row.get("oom") for row in rows):
        return f"{mode:>13}: OOM"
    peak = max(row["peak_gb"] for row in rows)
    state = max(row["state_gb"] for row in rows)
    seconds = max(row["s_per_iter"] for row in rows)
    main = next(row for row in rows if row["rank"] == 0)["load_rss_gb"]
    others = max((row["load_rss_gb"] for row in rows if row["rank"] != 0), default=main)
    return (
        f"{mode:>13}: weights + AdamW state {state:8.3f} GB per rank, loaded (host peak RSS) "
        f"{main:.3f} GB rank 0 / {others:.3f} GB others, peak {peak:8.3f} GB "
        f"({rows[0]['peak_kind']}), {seconds:.3f} s/iter"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="CPU, gloo (tiny config unless --config)"
    )
    parser.add_argument("--config", choices=sorted(CONFIGS), help="the FLUX architecture's size")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--side", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=1, help="latents per micro-batch")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument(
        "--modes", default="replicated,sharded", help="of replicated, sharded, sharded-whole"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--result-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick and "--side" not in sys.argv:
        args.side = 128
    args.config = args.config or ("tiny" if args.quick else "dev")
    if args.worker:
        worker(args)
        return
    config = "FLUX.1-dev" if args.config == "dev" else f"{args.config} FLUX config"
    print(f"{config}, {args.ranks} ranks, {args.side}px, batch {args.batch}, {args.iters} iters")
    params = 0
    with tempfile.TemporaryDirectory() as result_dir:
        for mode in args.modes.split(","):
            rows = launch(args, mode, result_dir)
            params = rows[0].get("params", params)
            print(report(mode, rows))
    for line in arithmetic(params, args.ranks):
        print(f"  {line}")


if __name__ == "__main__":
    main()
