"""TreeGRPO vs DanceGRPO at SD3.5-Medium scale: seconds per iteration, images/s, memory and MFU.

A transformer with SD3.5-Medium's architecture (diffusers `SD3Transformer2DModel`, 2.24 B
trained parameters, random init) runs through the product's own code path: `SD3StyleAdapter`,
`rollout_trees` / `rollout_flat`, `tree_advantages` / `combine_rewards`, `tree_edges` /
`flat_edges` and `Trainer.update` (the PPO step, AdamW, grad-norm clip). What is left out, and why:

- Text encoders: fixed random embeddings of the right shapes stand in for CLIP-L/G + T5
  (tokens (B, 77 + 256, 4096), pooled (B, 2048)); they run once per prompt, not per step.
- VAE and reward model: the reward is a fixed random projection of the final latents
  (512 x 512 images = 16 x 64 x 64 latents). We time the RL engine, not the scorers.
- Noise is drawn on the CPU before each timed phase (the engine draws it up front anyway).

One iteration of each algorithm, per prompt (docs/TREEGRPO.md §3, §6, §7):

    TreeGRPO   k=3, d=3, T=10, window start s (default 0, the costliest): 27 leaves,
               s + 13 + 27 (T - s - d) model evaluations, 13 parent states (39 edges) trained
    DanceGRPO  27 trajectories from one initial noise, SDE at every step, 270 evaluations,
               a random 60% of the steps trained: 27 x 6 = 162 parent states

CFG doubles every evaluation (cond + uncond rows in one call), in the rollout and the update.
Precision with `--dtype bfloat16` (the default on a GPU): float32 master weights and AdamW state,
the denoiser runs under bf16 autocast (`adapter.autocast_dtype`, as the product's loader sets it).
Full fine-tune (the official setting) needs 2.24 B x 16 bytes = 36 GB of weights, gradients and
AdamW moments; `--lora-rank` trains LoRA adapters instead.

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` on one state's forward (rollout)
and on one parent's forward + backward (update; "model" FLOPs without the recompute of gradient
checkpointing, "executed" FLOPs with it), then scaled by the evaluations and parents of an
iteration (every op is per row, so FLOPs are linear in the batch). An analytic count from the
config is printed next to it as a cross-check (6 N D does not fit an MMDiT: each token passes
through only its own stream's weights). MFU = model FLOPs / seconds / the bf16 matmul peak
measured here (an 8192^3 matmul); the update's seconds include the optimizer step.

Run on a GPU (about 2 minutes on an H100/H200; torch + diffusers + this repository):

    PYTHONPATH=. python bench/gpu_sd35.py --size sd35m --json bench/results/gpu-sd35m.json

CPU smoke run (seconds): python bench/gpu_sd35.py --size tiny --device cpu

FLUX.1-dev architecture (`--size flux1-dev`: 19 double + 38 single blocks, 11.9 B parameters,
random init, bf16, 512 x 512 = 1024 packed tokens + 512 T5 tokens, guidance embedded, true CFG
off, LoRA rank 64 by default: a full fine-tune needs ~190 GB with AdamW): the same two
iterations through `FluxAdapter`. CPU smoke: --size flux-tiny --device cpu.
The GPU efficiency options are flags: --weights-dtype bfloat16 (bf16 weights, float32 masters),
--fused-adamw, --compile, --no-grad-checkpointing.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

# Run as a script (`python bench/gpu_sd35.py`): make the repository's package importable.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from treegrpo.advantages import combine_rewards  # noqa: E402
from treegrpo.algorithms.dancegrpo import dancegrpo_train_steps  # noqa: E402
from treegrpo.config import FlatConfig, RunConfig, SamplingConfig, TrainConfig, TreeConfig  # noqa: E402
from treegrpo.edges import EdgeBatch, flat_edges, tree_edges  # noqa: E402
from treegrpo.models.base import Conditioning  # noqa: E402
from treegrpo.models.flux import FluxAdapter  # noqa: E402
from treegrpo.models.sd3 import SD3StyleAdapter  # noqa: E402
from treegrpo.rollout import (  # noqa: E402
    draw_flat_noise,
    draw_tree_noise,
    rollout_flat,
    rollout_trees,
)
from treegrpo.schedules import Schedule  # noqa: E402
from treegrpo.trainer import Trainer  # noqa: E402
from treegrpo.tree import TreeShape, leaf_count, model_evaluations, trained_edge_count  # noqa: E402
from treegrpo.tree_scoring import tree_advantages  # noqa: E402

PROMPTS = [
    "a red fox sitting in fresh snow, golden hour",
    "a watercolor painting of a lighthouse on a cliff",
    "two cats sleeping on a blue sofa",
    "an astronaut riding a horse on the moon",
    "a bowl of ramen, studio lighting",
    "a city street in the rain at night",
    "a field of sunflowers under a stormy sky",
    "a robot reading a newspaper in a cafe",
]

# Trainer wants a registered reward name; the benchmark scores with its own latent projection
# and never calls the trainer's scoring, so the name is only a label.
REWARD_LABEL = "brightness"


@dataclass(frozen=True)
class ModelSize:
    """A transformer config plus what the benchmark feeds it."""

    transformer: dict[str, Any]  # SD3Transformer2DModel(**transformer) / FluxTransformer2DModel
    latent_size: int  # latent height = width (512 px / 8 = 64 for SD3.5 and FLUX)
    text_tokens: int  # CLIP 77 + T5 256 for SD3.5; T5 512 for FLUX
    shift: float  # the flow scheduler's timestep shift
    arch: str = "sd3"  # "sd3" (MMDiT) or "flux" (double + single stream, packed latents)


SIZES: dict[str, ModelSize] = {
    # stabilityai/stable-diffusion-3.5-medium, transformer/config.json (diffusers names).
    "sd35m": ModelSize(
        transformer={
            "sample_size": 128,
            "patch_size": 2,
            "in_channels": 16,
            "out_channels": 16,
            "num_layers": 24,
            "attention_head_dim": 64,
            "num_attention_heads": 24,
            "joint_attention_dim": 4096,
            "caption_projection_dim": 1536,
            "pooled_projection_dim": 2048,
            "pos_embed_max_size": 384,
            "qk_norm": "rms_norm",
            "dual_attention_layers": tuple(range(13)),
        },
        latent_size=64,
        text_tokens=77 + 256,
        shift=3.0,
    ),
    # Same block types (dual attention, qk RMSNorm, a context-pre-only last block), tiny widths.
    "tiny": ModelSize(
        transformer={
            "sample_size": 8,
            "patch_size": 2,
            "in_channels": 4,
            "out_channels": 4,
            "num_layers": 2,
            "attention_head_dim": 8,
            "num_attention_heads": 2,
            "joint_attention_dim": 32,
            "caption_projection_dim": 16,
            "pooled_projection_dim": 24,
            "pos_embed_max_size": 8,
            "qk_norm": "rms_norm",
            "dual_attention_layers": (0,),
        },
        latent_size=8,
        text_tokens=10,
        shift=3.0,
    ),
    # black-forest-labs/FLUX.1-dev, transformer/config.json: 19 double + 38 single blocks,
    # 11.9 B parameters; 512 x 512 images = 16 x 64 x 64 latents = 1024 packed tokens.
    "flux1-dev": ModelSize(
        transformer={
            "patch_size": 1,
            "in_channels": 64,
            "num_layers": 19,
            "num_single_layers": 38,
            "attention_head_dim": 128,
            "num_attention_heads": 24,
            "joint_attention_dim": 4096,
            "pooled_projection_dim": 768,
            "guidance_embeds": True,
            "axes_dims_rope": (16, 56, 56),
        },
        latent_size=64,
        text_tokens=512,
        shift=3.0,
        arch="flux",
    ),
    "flux-tiny": ModelSize(
        transformer={
            "patch_size": 1,
            "in_channels": 16,
            "num_layers": 1,
            "num_single_layers": 2,
            "attention_head_dim": 16,
            "num_attention_heads": 2,
            "joint_attention_dim": 32,
            "pooled_projection_dim": 24,
            "guidance_embeds": True,
            "axes_dims_rope": (4, 6, 6),
        },
        latent_size=8,
        text_tokens=10,
        shift=3.0,
        arch="flux",
    ),
}
MFU_TARGET = 0.40  # the models issue's target, for the rollout and the update alike
# FLUX.1-dev's scheduler: dynamic shifting from the image's token count (its config file).
FLUX_SCHEDULER = {
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


@dataclass(frozen=True)
class Settings:
    size: str
    device: str
    dtype: str
    prompts: int
    k: int
    depth: int
    steps: int
    window_start: int
    group_size: int
    timestep_fraction: float
    cfg_scale: float
    eta: float
    micro_batch: int
    grad_checkpointing: bool
    lora_rank: int
    weights_dtype: str
    fused_adamw: bool | None
    compile: bool
    lr: float
    max_batch: int
    repeats: int
    warmup: int
    time_budget: float
    peak_size: int
    profile: bool
    seed: int
    json_path: str | None


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="sd35m", help="transformer size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--dtype",
        choices=["bfloat16", "float32"],
        default=None,
        help="bfloat16: float32 master weights under bf16 autocast (default on CUDA); float32",
    )
    p.add_argument("--prompts", type=int, default=None, help="trees per iteration (GPU 2, CPU 1)")
    p.add_argument("--k", type=int, default=3, help="branching factor")
    p.add_argument("--depth", type=int, default=3, help="SDE window width d")
    p.add_argument("--steps", type=int, default=10, help="denoising steps T")
    p.add_argument("--window-start", type=int, default=0, help="first SDE step s of the tree")
    p.add_argument("--group-size", type=int, default=0, help="DanceGRPO G (0: k^d, as many images)")
    p.add_argument("--timestep-fraction", type=float, default=0.6, help="DanceGRPO trained steps")
    p.add_argument(
        "--cfg-scale",
        type=float,
        default=None,
        help="CFG scale, cond+uncond per call (default 4.5; FLUX 1: guidance is embedded)",
    )
    p.add_argument("--eta", type=float, default=0.7, help="SDE noise level")
    p.add_argument(
        "--micro-batch",
        type=int,
        default=None,
        help="parent states per forward/backward in the update (sd35m: 16 with gradient "
        "checkpointing, 4 without; tiny: 0 = all)",
    )
    p.add_argument(
        "--grad-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="gradient checkpointing in the update (default: on for sd35m, off for tiny)",
    )
    p.add_argument(
        "--lora-rank",
        type=int,
        default=None,
        help="LoRA rank; 0 = full fine-tune (default 0; flux1-dev 64, as Flow-GRPO's FLUX LoRA: "
        "a full fine-tune of 11.9 B parameters needs ~190 GB with AdamW)",
    )
    p.add_argument(
        "--weights-dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="bfloat16: bf16 trained weights with float32 masters in the optimizer",
    )
    p.add_argument(
        "--fused-adamw",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch's fused AdamW (default: on CUDA)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the denoiser")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate")
    p.add_argument("--max-batch", type=int, default=0, help="rows per rollout call (0: all)")
    p.add_argument("--repeats", type=int, default=2, help="timed iterations of each algorithm")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations of each first")
    p.add_argument(
        "--time-budget",
        type=float,
        default=240.0,
        help="seconds: skip further timed rounds once the next would end past this (>= 1 runs)",
    )
    p.add_argument("--peak-size", type=int, default=None, help="n of the n^3 peak matmul")
    p.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="profile one update micro-batch and print the ops that take the most time",
    )
    p.add_argument("--seed", type=int, default=0, help="model init, text and noise seed")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_gpu = device.startswith("cuda")
    big = args.size in ("sd35m", "flux1-dev")
    flux = SIZES[args.size].arch == "flux"
    lora_rank = (
        args.lora_rank if args.lora_rank is not None else (64 if args.size == "flux1-dev" else 0)
    )
    checkpointing = big if args.grad_checkpointing is None else args.grad_checkpointing
    if args.micro_batch is not None:
        micro_batch = args.micro_batch
    else:
        micro_batch = (16 if checkpointing else 4) if big else 0
    return Settings(
        size=args.size,
        device=device,
        dtype=args.dtype or ("bfloat16" if on_gpu else "float32"),
        prompts=args.prompts if args.prompts is not None else (2 if on_gpu else 1),
        k=args.k,
        depth=args.depth,
        steps=args.steps,
        window_start=args.window_start,
        group_size=args.group_size or leaf_count(args.k, args.depth),
        timestep_fraction=args.timestep_fraction,
        # FLUX.1-dev: guidance embedded, true CFG off (one row per evaluation).
        cfg_scale=1.0 if flux and args.cfg_scale is None else (args.cfg_scale or 4.5),
        eta=args.eta,
        micro_batch=micro_batch,
        grad_checkpointing=checkpointing,
        lora_rank=lora_rank,
        weights_dtype=args.weights_dtype,
        fused_adamw=args.fused_adamw,
        compile=args.compile,
        lr=args.lr,
        max_batch=args.max_batch,
        repeats=args.repeats,
        warmup=args.warmup,
        time_budget=args.time_budget,
        peak_size=args.peak_size or (8192 if on_gpu else 512),
        profile=args.profile,
        seed=args.seed,
        json_path=args.json,
    )


# ---------------------------------------------------------------------------------------------
# The model: transformer, text stand-in, decoder, reward


class RandomTextEmbeddings:
    """Stand-in for SD3's text encoders: (tokens (B, L, D), pooled (B, P)), fixed per prompt."""

    def __init__(self, tokens: int, dim: int, pooled_dim: int, seed: int) -> None:
        self.tokens = tokens
        self.dim = dim
        self.pooled_dim = pooled_dim
        self.seed = seed

    def __call__(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        states, pooled = [], []
        for prompt in prompts:
            generator = torch.Generator().manual_seed(self.seed + zlib.crc32(prompt.encode()))
            states.append(torch.randn(self.tokens, self.dim, generator=generator))
            pooled.append(torch.randn(self.pooled_dim, generator=generator))
        return torch.stack(states), torch.stack(pooled)  # (B, L, D), (B, P)


def latent_decoder(latents: Tensor) -> Tensor:
    """No VAE: latents in about [-1, 1] map to "images" in [0, 1] with the latent's channels."""
    return latents * 0.5 + 0.5


class ProjectionReward:
    """A cheap reward on the decoded latents: a fixed random projection per image."""

    def __init__(self, numel: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.weights = torch.randn(numel, generator=generator) / numel**0.5  # (C * H * W,)

    def __call__(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        return images.flatten(1).float().cpu() @ self.weights  # (B,)


def build_adapter(s: Settings, device: torch.device) -> SD3StyleAdapter | FluxAdapter:
    size = SIZES[s.size]
    config = size.transformer
    torch.manual_seed(s.seed)
    autocast = torch.bfloat16 if s.dtype == "bfloat16" else None
    if size.arch == "flux":
        from diffusers import FluxTransformer2DModel

        with device:  # initialise on the device: an 11.9 B-parameter CPU init takes minutes
            flux = FluxTransformer2DModel(**config)
        flux.to(device)
        return FluxAdapter(
            f"{s.size}-random-init",
            flux,
            RandomTextEmbeddings(
                size.text_tokens,
                config["joint_attention_dim"],
                config["pooled_projection_dim"],
                s.seed,
            ),
            latent_decoder,
            latent_shape=(config["in_channels"] // 4, size.latent_size, size.latent_size),
            device=device,
            scheduler_config=FLUX_SCHEDULER,
            guidance=3.5,
            autocast_dtype=autocast,
        )
    from diffusers import SD3Transformer2DModel

    with device:  # initialise on the device: a 2.24 B-parameter CPU init takes far longer
        transformer = SD3Transformer2DModel(**config)
    transformer.to(device)  # a no-op unless some buffer was made elsewhere
    return SD3StyleAdapter(
        f"{s.size}-random-init",
        transformer,
        RandomTextEmbeddings(
            size.text_tokens, config["joint_attention_dim"], config["pooled_projection_dim"], s.seed
        ),
        latent_decoder,
        latent_shape=(config["in_channels"], size.latent_size, size.latent_size),
        device=device,
        dtype=torch.float32,  # inputs match the float32 master weights; autocast lowers them
        family="flow",
        scheduler_config={"shift": size.shift},
        autocast_dtype=autocast,
    )


def run_config(s: Settings) -> RunConfig:
    """The trainer's settings; only `sampling` and `train` matter to `Trainer.update`."""
    return RunConfig(
        algorithm="treegrpo",
        model=f"./{s.size}-random-init",  # a label: the adapter is built here, not loaded
        dtype=s.dtype,  # type: ignore[arg-type]
        reward=REWARD_LABEL,
        prompts=tuple(PROMPTS),
        prompts_per_epoch=s.prompts,
        sampling=SamplingConfig(
            steps=s.steps, cfg_scale=s.cfg_scale, eta=s.eta, max_batch=s.max_batch
        ),
        tree=TreeConfig(k=s.k, depth=s.depth, window="fixed", window_start=s.window_start),
        flat=FlatConfig(group_size=s.group_size, timestep_fraction=s.timestep_fraction),
        train=TrainConfig(
            lr=s.lr,
            micro_batch=s.micro_batch,
            lora_rank=s.lora_rank,
            grad_checkpointing=s.grad_checkpointing,
            weights_dtype=s.weights_dtype,  # type: ignore[arg-type]
            fused_adamw=s.fused_adamw,
            compile=s.compile,
        ),
    )


# ---------------------------------------------------------------------------------------------
# FLOPs and the matmul peak


def analytic_forward_flops(config: dict[str, Any], image_tokens: int, text_tokens: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one SD3 transformer row, from its config.

    Per block: image stream q, k, v, out + 4x MLP; text stream q, k, v (+ out and MLP unless it
    is the context-pre-only last block); joint attention 4 n^2 D over n = image + text tokens;
    dual-attention blocks add a second image-only attention. AdaLN linears act once per row.
    """
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    patch = config["patch_size"]
    layers = config["num_layers"]
    joint = image_tokens + text_tokens

    def linear(fan_in: int, fan_out: int, tokens: int = 1) -> int:
        return 2 * fan_in * fan_out * tokens

    flops = linear(config["in_channels"] * patch * patch, dim, image_tokens)  # patch embed
    flops += linear(config["joint_attention_dim"], dim, text_tokens)  # context embedder
    flops += linear(256, dim) + linear(dim, dim)  # timestep embedding
    flops += linear(config["pooled_projection_dim"], dim) + linear(dim, dim)  # pooled text
    for index in range(layers):
        dual = index in config["dual_attention_layers"]
        last = index == layers - 1
        flops += linear(dim, (9 if dual else 6) * dim)  # norm1 modulation
        flops += linear(dim, (2 if last else 6) * dim)  # norm1_context modulation
        flops += 4 * linear(dim, dim, image_tokens) + 2 * linear(dim, 4 * dim, image_tokens)
        flops += 3 * linear(dim, dim, text_tokens)
        if not last:
            flops += linear(dim, dim, text_tokens) + 2 * linear(dim, 4 * dim, text_tokens)
        flops += 4 * joint * joint * dim  # softmax(Q K^T) V over the joint sequence
        if dual:
            flops += 4 * linear(dim, dim, image_tokens) + 4 * image_tokens * image_tokens * dim
    flops += linear(dim, 2 * dim)  # norm_out modulation
    flops += linear(dim, patch * patch * config["out_channels"], image_tokens)  # proj_out
    return flops


def analytic_flux_forward_flops(config: dict[str, Any], image_tokens: int, text_tokens: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one FLUX transformer row, from its config.

    Double blocks: each stream's q, k, v, out and 4x GELU MLP, AdaLN (6 dim) per stream, joint
    attention. Single blocks, on the joint sequence: q, k, v, a 4x MLP branch in parallel, one
    output projection from 5 dim, AdaLN (3 dim), attention. Plus the embedders and the output.
    """
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    joint = image_tokens + text_tokens

    def linear(fan_in: int, fan_out: int, tokens: int = 1) -> int:
        return 2 * fan_in * fan_out * tokens

    flops = linear(config["in_channels"], dim, image_tokens)  # x_embedder
    flops += linear(config["joint_attention_dim"], dim, text_tokens)  # context_embedder
    embeds = 3 if config.get("guidance_embeds") else 2  # timestep, (guidance,) pooled text
    flops += (
        embeds * linear(dim, dim)
        + 2 * linear(256, dim)
        + linear(config["pooled_projection_dim"], dim)
    )
    for _ in range(config["num_layers"]):
        flops += 2 * linear(dim, 6 * dim)  # AdaLN of both streams
        for tokens in (image_tokens, text_tokens):
            flops += 4 * linear(dim, dim, tokens) + 2 * linear(dim, 4 * dim, tokens)
        flops += 4 * joint * joint * dim
    for _ in range(config["num_single_layers"]):
        flops += linear(dim, 3 * dim)  # AdaLN
        flops += 3 * linear(dim, dim, joint) + linear(dim, 4 * dim, joint)
        flops += linear(5 * dim, dim, joint) + 4 * joint * joint * dim
    flops += linear(dim, 2 * dim) + linear(dim, config["in_channels"], image_tokens)
    return flops


def size_forward_flops(size: ModelSize) -> int:
    """The analytic forward FLOPs of one row at this size's latent and text lengths."""
    if size.arch == "flux":
        return analytic_flux_forward_flops(
            size.transformer, (size.latent_size // 2) ** 2, size.text_tokens
        )
    patch = size.transformer["patch_size"]
    return analytic_forward_flops(
        size.transformer, (size.latent_size // patch) ** 2, size.text_tokens
    )


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of `fn`. Attention runs on SDPA's math backend here, so that its matmuls count
    whatever fused kernel a device would pick (FlopCounterMode has no formula for some, e.g.
    the CPU's flash kernel); the FLOPs are the same either way."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class FlopCounts:
    forward_per_state: int  # one guided evaluation (cond + uncond rows when CFG is on)
    forward_per_state_analytic: int
    update_per_parent_model: int  # forward + backward, no recompute
    update_per_parent_executed: int  # as run: with the recompute of gradient checkpointing
    method: str


def measure_flops(
    adapter: SD3StyleAdapter | FluxAdapter, trainer: Trainer, s: Settings
) -> FlopCounts:
    """FlopCounterMode on one state (rollout) and one parent (update), CFG as configured.

    The model FLOPs of the update are counted with checkpointing off, which holds one parent's
    activations (about 25 GB at sd35m with math attention); if that runs out of memory they are
    the executed FLOPs less one forward (the recompute)."""
    schedule = trainer.schedule
    cond = adapter.encode_prompts(PROMPTS[:1])
    x = adapter.initial_noise(1, torch.Generator().manual_seed(s.seed))  # (1, C, H, W)
    steps = torch.tensor([s.window_start])  # (1,) per-row steps, as the update passes them
    denoiser = adapter.denoiser
    rows = 1 if s.cfg_scale == 1.0 else 2
    analytic = rows * size_forward_flops(SIZES[s.size])

    def forward() -> None:
        with torch.no_grad():
            adapter.predict(x, s.window_start, schedule, cond, s.cfg_scale)

    def forward_backward() -> None:
        out = adapter.predict(x, steps, schedule, cond, s.cfg_scale)
        out.square().mean().backward()

    forward_flops = count_flops(forward)
    denoiser.train()
    executed = count_flops(forward_backward)
    trainer.optimizer.zero_grad(set_to_none=True)
    model, method = executed, "FlopCounterMode"
    if s.grad_checkpointing:
        denoiser.disable_gradient_checkpointing()  # type: ignore[operator]
        try:
            model = count_flops(forward_backward)
        except torch.cuda.OutOfMemoryError:
            model = executed - forward_flops
            method = "FlopCounterMode; update model FLOPs = executed - one forward (OOM)"
        finally:
            trainer.optimizer.zero_grad(set_to_none=True)
            adapter.enable_gradient_checkpointing()
            gc.collect()
            if adapter.device.type == "cuda":
                torch.cuda.empty_cache()
    return FlopCounts(forward_flops, analytic, model, executed, method)


def analytic_flop_counts(s: Settings) -> FlopCounts:
    """Fallback when counting fails: the analytic forward; backward = 2 forwards (full
    fine-tune) or 1 (LoRA: input gradients only); checkpointing recomputes one forward."""
    rows = 1 if s.cfg_scale == 1.0 else 2
    forward = rows * size_forward_flops(SIZES[s.size])
    model = forward * (2 if s.lora_rank else 3)
    executed = model + (forward if s.grad_checkpointing else 0)
    return FlopCounts(forward, forward, model, executed, "analytic (FlopCounterMode failed)")


def emit(text: str = "") -> None:
    """Print at once: a GPU run's log is read while it runs, and interleaves with stderr."""
    print(text, flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], device: torch.device, repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """Best of 3 timings of back-to-back n x n x n matmuls, after a warmup long enough for a
    GPU to reach its working clocks."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    gpu = device.type == "cuda"
    for _ in range(100 if gpu else 2):
        torch.mm(a, b)
    iters = 50 if gpu else 5

    def run() -> None:
        for _ in range(iters):
            torch.mm(a, b)

    return 2 * n**3 * iters / best_seconds(run, device, repeats=3) / 1e12


# ---------------------------------------------------------------------------------------------
# One iteration of each algorithm


@dataclass
class Iteration:
    rollout: float
    score: float
    update: float
    rollout_peak_gb: float | None
    update_peak_gb: float | None
    resident_gb: float | None  # allocated when the update starts: weights, optimizer, edges
    images: int
    model_evals: int
    model_calls: int
    parents: int
    edges: int
    metrics: dict[str, float]

    @property
    def total(self) -> float:
        return self.rollout + self.score + self.update


class Bench:
    def __init__(
        self, s: Settings, adapter: SD3StyleAdapter | FluxAdapter, trainer: Trainer
    ) -> None:
        self.s = s
        self.adapter = adapter
        self.trainer = trainer
        self.schedule: Schedule = trainer.schedule
        self.device = adapter.device
        self.prompts = PROMPTS[: s.prompts]
        self.groups = torch.arange(s.prompts)  # (prompts,) every prompt its own group
        c, h, w = adapter.latent_shape
        self.reward = ProjectionReward(c * h * w, s.seed)
        self.phase = "setup"

    # -- memory ---------------------------------------------------------------------------------

    def _reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def _peak_gb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**30

    def _allocated_gb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return torch.cuda.memory_allocated(self.device) / 2**30

    # -- phases ---------------------------------------------------------------------------------

    def _score(self, leaves: Tensor, prompts: list[str]) -> dict[str, Tensor]:
        return {REWARD_LABEL: self.reward(self.adapter.decode(leaves), prompts)}

    def _update(
        self, edges: EdgeBatch, cond: Conditioning, generator: torch.Generator
    ) -> tuple[float, float | None, float | None, dict[str, float]]:
        """Trainer.update over `edges`: (seconds, peak GB, resident GB at start, metrics)."""
        self.phase = "update"
        synchronize(self.device)
        self._reset_peak()
        resident = self._allocated_gb()
        start = time.perf_counter()
        self.adapter.denoiser.train()
        metrics = self.trainer.update(edges, cond, generator)
        synchronize(self.device)
        return time.perf_counter() - start, self._peak_gb(), resident, metrics

    def tree(self, round_index: int) -> Iteration:
        s = self.s
        shape = TreeShape(s.k, s.depth, s.steps, s.window_start)
        generator = torch.Generator().manual_seed(s.seed * 1000 + round_index)
        noise = draw_tree_noise(s.prompts, shape, self.adapter.latent_shape, generator)

        self.phase = "rollout"
        synchronize(self.device)
        self._reset_peak()
        start = time.perf_counter()
        self.adapter.denoiser.eval()
        with torch.no_grad():
            cond = self.adapter.encode_prompts(self.prompts)
            rollout = rollout_trees(
                self.adapter,
                self.schedule,
                self.prompts,
                cond,
                shape,
                noise,
                s.cfg_scale,
                s.eta,
                s.max_batch,
            )
        synchronize(self.device)
        rollout_seconds = time.perf_counter() - start
        rollout_peak = self._peak_gb()

        self.phase = "score"
        start = time.perf_counter()
        with torch.no_grad():
            leaves = rollout.leaves.reshape(-1, *rollout.leaves.shape[2:])  # (trees * k^d, C, H, W)
            leaf_prompts = [p for p in self.prompts for _ in range(shape.width(shape.steps))]
            rewards = self._score(leaves, leaf_prompts)
            _, values = tree_advantages(rollout, rewards, {REWARD_LABEL: 1.0}, self.groups, "mean")
            edges = tree_edges(rollout, values)
        synchronize(self.device)
        score_seconds = time.perf_counter() - start
        evals, calls = rollout.model_evals, rollout.model_calls
        del rollout, leaves

        expected = s.prompts * model_evaluations(s.k, s.depth, s.steps, s.window_start)
        assert evals == expected, (evals, expected)
        assert len(edges) * s.k == s.prompts * trained_edge_count(s.k, s.depth)
        update_seconds, update_peak, resident, metrics = self._update(edges, cond, generator)
        return Iteration(
            rollout=rollout_seconds,
            score=score_seconds,
            update=update_seconds,
            rollout_peak_gb=rollout_peak,
            update_peak_gb=update_peak,
            resident_gb=resident,
            images=s.prompts * leaf_count(s.k, s.depth),
            model_evals=evals,
            model_calls=calls,
            parents=len(edges),
            edges=len(edges) * s.k,
            metrics=metrics,
        )

    def dance(self, round_index: int) -> Iteration:
        s = self.s
        generator = torch.Generator().manual_seed(s.seed * 1000 + 500 + round_index)
        # DanceGRPO: per trajectory, a random subset of the steps without the last one.
        train_steps = dancegrpo_train_steps(
            s.prompts * s.group_size, s.steps, s.timestep_fraction, generator
        )
        sde = torch.ones(s.steps, dtype=torch.bool)  # (T,) SDE at every step
        noise = draw_flat_noise(
            s.prompts, s.group_size, s.steps, self.adapter.latent_shape, generator
        )

        self.phase = "rollout"
        synchronize(self.device)
        self._reset_peak()
        start = time.perf_counter()
        self.adapter.denoiser.eval()
        with torch.no_grad():
            cond = self.adapter.encode_prompts(self.prompts)
            rollout = rollout_flat(
                self.adapter,
                self.schedule,
                self.prompts,
                cond,
                s.group_size,
                sde,
                noise,
                s.cfg_scale,
                s.eta,
                s.max_batch,
            )
        synchronize(self.device)
        rollout_seconds = time.perf_counter() - start
        rollout_peak = self._peak_gb()

        self.phase = "score"
        start = time.perf_counter()
        with torch.no_grad():
            row_prompts = [p for p in self.prompts for _ in range(s.group_size)]
            rewards = self._score(rollout.last_x0, row_prompts)  # DanceGRPO decodes x0_hat
            row_groups = self.groups.repeat_interleave(s.group_size)
            advantages = combine_rewards(rewards, {REWARD_LABEL: 1.0}, row_groups)
            edges = flat_edges(rollout, advantages, train_steps)
        synchronize(self.device)
        score_seconds = time.perf_counter() - start
        evals, calls = rollout.model_evals, rollout.model_calls
        del rollout

        assert evals == s.prompts * s.group_size * s.steps
        update_seconds, update_peak, resident, metrics = self._update(edges, cond, generator)
        return Iteration(
            rollout=rollout_seconds,
            score=score_seconds,
            update=update_seconds,
            rollout_peak_gb=rollout_peak,
            update_peak_gb=update_peak,
            resident_gb=resident,
            images=s.prompts * s.group_size,
            model_evals=evals,
            model_calls=calls,
            parents=len(edges),
            edges=len(edges),
            metrics=metrics,
        )


# ---------------------------------------------------------------------------------------------
# What the update's time goes to: one micro-batch alone, the optimizer alone, a profile


@dataclass
class UpdateBreakdown:
    parents: int  # one micro-batch of parent states, before CFG doubling
    forward_seconds: float | None = None
    forward_tflops: float | None = None
    forward_backward_seconds: float | None = None
    forward_backward_tflops: float | None = None  # model FLOPs (no recompute)
    forward_backward_mfu: float | None = None
    optimizer_seconds: float | None = None  # grad-norm clip + AdamW step
    top_ops: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def profile_top_ops(
    fn: Callable[[], object], device: torch.device, rows: int = 12
) -> list[dict[str, Any]]:
    """The ops that take the most (device, else CPU) self time in one call of `fn`."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        fn()
        synchronize(device)
    events = prof.key_averages()

    def self_us(event: Any) -> float:
        if device.type == "cuda":
            return float(event.self_device_time_total)
        return float(event.self_cpu_time_total)

    total = sum(self_us(e) for e in events) or 1.0
    ranked = sorted(events, key=self_us, reverse=True)[:rows]
    return [
        {
            "op": e.key,
            "calls": int(e.count),
            "self_ms": self_us(e) / 1e3,
            "share": self_us(e) / total,
        }
        for e in ranked
    ]


def measure_breakdown(
    bench: Bench, flops: FlopCounts, peak_tflops: float, profile: bool
) -> UpdateBreakdown:
    """Time one update micro-batch forward, forward + backward, and one optimizer step."""
    s, adapter, trainer = bench.s, bench.adapter, bench.trainer
    parents = s.micro_batch or s.prompts * trained_edge_count(s.k, s.depth) // s.k
    result = UpdateBreakdown(parents=parents)
    generator = torch.Generator().manual_seed(s.seed + 7)
    x = adapter.initial_noise(parents, generator)  # (parents, C, H, W)
    steps = torch.randint(0, s.steps, (parents,), generator=generator)  # (parents,)
    cond = adapter.encode_prompts([PROMPTS[i % s.prompts] for i in range(parents)])
    device = adapter.device

    def forward() -> None:
        with torch.no_grad():
            adapter.predict(x, steps, bench.schedule, cond, s.cfg_scale)

    def forward_backward() -> None:
        out = adapter.predict(x, steps, bench.schedule, cond, s.cfg_scale)
        out.square().mean().backward()

    def optimizer_step() -> None:
        torch.nn.utils.clip_grad_norm_(trainer.parameters, 1.0)
        trainer.optimizer.step()

    adapter.denoiser.train()
    forward()
    result.forward_seconds = best_seconds(forward, device)
    result.forward_tflops = parents * flops.forward_per_state / result.forward_seconds / 1e12
    forward_backward()
    result.forward_backward_seconds = best_seconds(forward_backward, device)
    model = parents * flops.update_per_parent_model
    result.forward_backward_tflops = model / result.forward_backward_seconds / 1e12
    result.forward_backward_mfu = result.forward_backward_tflops / peak_tflops
    result.optimizer_seconds = best_seconds(optimizer_step, device)
    if profile:
        trainer.optimizer.zero_grad(set_to_none=True)
        result.top_ops = profile_top_ops(forward_backward, device)
    trainer.optimizer.zero_grad(set_to_none=True)
    return result


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class AlgorithmResult:
    algorithm: str
    error: str | None = None
    images: int = 0
    model_evals: int = 0  # states evaluated in the rollout, before CFG doubling
    model_calls: int = 0
    trained_parents: int = 0  # forward + backward passes of the update, before CFG doubling
    trained_edges: int = 0
    rollout_seconds: float | None = None  # medians over the timed iterations
    score_seconds: float | None = None
    update_seconds: float | None = None
    seconds_per_iteration: float | None = None
    seconds_all: dict[str, list[float]] = field(default_factory=dict)
    images_per_second: float | None = None
    rollout_peak_memory_gb: float | None = None
    update_peak_memory_gb: float | None = None
    update_resident_memory_gb: float | None = None
    rollout_tflops: float | None = None  # achieved, model FLOPs
    update_tflops: float | None = None
    rollout_mfu: float | None = None  # vs the measured matmul peak
    update_mfu: float | None = None
    update_executed_utilisation: float | None = None  # counts the checkpointing recompute
    last_update_metrics: dict[str, float] = field(default_factory=dict)


def summarise(
    name: str, runs: list[Iteration], flops: FlopCounts, peak_tflops: float
) -> AlgorithmResult:
    last = runs[-1]
    rollout = statistics.median(r.rollout for r in runs)
    score = statistics.median(r.score for r in runs)
    update = statistics.median(r.update for r in runs)
    total = statistics.median(r.total for r in runs)
    rollout_tflops = last.model_evals * flops.forward_per_state / rollout / 1e12
    update_tflops = last.parents * flops.update_per_parent_model / update / 1e12
    executed_tflops = last.parents * flops.update_per_parent_executed / update / 1e12

    def peak_of(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return max(present) if present else None

    return AlgorithmResult(
        algorithm=name,
        images=last.images,
        model_evals=last.model_evals,
        model_calls=last.model_calls,
        trained_parents=last.parents,
        trained_edges=last.edges,
        rollout_seconds=rollout,
        score_seconds=score,
        update_seconds=update,
        seconds_per_iteration=total,
        seconds_all={
            "rollout": [r.rollout for r in runs],
            "score": [r.score for r in runs],
            "update": [r.update for r in runs],
            "total": [r.total for r in runs],
        },
        images_per_second=last.images / total,
        rollout_peak_memory_gb=peak_of([r.rollout_peak_gb for r in runs]),
        update_peak_memory_gb=peak_of([r.update_peak_gb for r in runs]),
        update_resident_memory_gb=peak_of([r.resident_gb for r in runs]),
        rollout_tflops=rollout_tflops,
        update_tflops=update_tflops,
        rollout_mfu=rollout_tflops / peak_tflops,
        update_mfu=update_tflops / peak_tflops,
        update_executed_utilisation=executed_tflops / peak_tflops,
        last_update_metrics=last.metrics,
    )


def device_line(device: torch.device) -> str:
    import diffusers

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        where = f"{name} ({total:.0f} GiB)"
    else:
        where = f"CPU {platform.processor() or platform.machine()}"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    where = f"CPU {line.split(':', 1)[1].strip()}"
                    break
        except OSError:
            pass
    return (
        f"device: {where} | torch {torch.__version__} | CUDA {torch.version.cuda or 'none'} | "
        f"diffusers {diffusers.__version__} | threads {torch.get_num_threads()}"
    )


def fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def print_table(results: list[AlgorithmResult]) -> None:
    header = (
        f"{'algorithm':<11}{'images':>7}{'evals':>7}{'parents':>8}{'rollout s':>10}"
        f"{'score s':>9}{'update s':>10}{'s/iter':>9}{'img/s':>8}{'peak GB roll/upd':>18}"
        f"{'MFU roll':>10}{'MFU upd':>9}"
    )
    emit(header)
    emit("-" * len(header))
    for r in results:
        if r.error is not None:
            emit(f"{r.algorithm:<11} failed: {r.error}")
            continue
        memory = f"{fmt(r.rollout_peak_memory_gb, '.1f')}/{fmt(r.update_peak_memory_gb, '.1f')}"
        emit(
            f"{r.algorithm:<11}{r.images:>7d}{r.model_evals:>7d}{r.trained_parents:>8d}"
            f"{fmt(r.rollout_seconds, '.2f'):>10}{fmt(r.score_seconds, '.3f'):>9}"
            f"{fmt(r.update_seconds, '.2f'):>10}{fmt(r.seconds_per_iteration, '.2f'):>9}"
            f"{fmt(r.images_per_second, '.2f'):>8}{memory:>18}"
            f"{fmt(r.rollout_mfu, '.1%'):>10}{fmt(r.update_mfu, '.1%'):>9}"
        )


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    s = parse_args(argv)
    if not 1 <= s.prompts <= len(PROMPTS):
        raise SystemExit(f"--prompts must be between 1 and {len(PROMPTS)}")
    if s.repeats < 1 or s.warmup < 0:
        raise SystemExit("--repeats must be at least 1 and --warmup at least 0")
    device = torch.device(s.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {s.device}: torch sees no CUDA device")
    began = time.perf_counter()

    def log(message: str) -> None:
        emit(f"[{time.perf_counter() - began:6.1f}s] {message}")

    arch = "FLUX" if SIZES[s.size].arch == "flux" else "SD3"
    emit(f"TreeGRPO vs DanceGRPO, one iteration each, {arch}-architecture transformer")
    emit(device_line(device))
    date = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    emit(f"date: {date}")

    adapter = build_adapter(s, device)
    trainer = Trainer(run_config(s), adapter, {REWARD_LABEL: ProjectionReward(1, 0)})
    parameters = sum(p.numel() for p in adapter.denoiser.parameters())
    trainable = sum(p.numel() for p in trainer.parameters)
    size = SIZES[s.size]
    c, h, w = adapter.latent_shape
    precision = (
        "float32 master weights + AdamW state, bf16 autocast"
        if s.dtype == "bfloat16"
        else "float32 throughout"
    )
    if s.weights_dtype == "bfloat16":
        precision = "bf16 weights, float32 masters + AdamW state in the optimizer, bf16 autocast"
    if s.lora_rank and s.dtype == "bfloat16":
        precision = "bf16 frozen base, float32 LoRA adapters + AdamW state, bf16 autocast"
    log(
        f"model {s.size}: {parameters / 1e6:,.1f} M parameters, {trainable / 1e6:,.1f} M trained "
        f"({'LoRA rank ' + str(s.lora_rank) if s.lora_rank else 'full fine-tune'}); latents "
        f"{c}x{h}x{w}, text tokens {size.text_tokens}; {precision}"
    )
    tree_evals = model_evaluations(s.k, s.depth, s.steps, s.window_start)
    tree_parents = trained_edge_count(s.k, s.depth) // s.k
    dance_steps = max(1, round(s.timestep_fraction * s.steps))
    log(
        f"per prompt: TreeGRPO k={s.k} d={s.depth} T={s.steps} s={s.window_start}: "
        f"{leaf_count(s.k, s.depth)} images, {tree_evals} evals, {tree_parents} parents "
        f"({trained_edge_count(s.k, s.depth)} edges); DanceGRPO G={s.group_size}: "
        f"{s.group_size} images, {s.group_size * s.steps} evals, {s.group_size * dance_steps} "
        f"parents; prompts={s.prompts} cfg={s.cfg_scale} eta={s.eta} "
        f"micro_batch={s.micro_batch or 'all'} grad_checkpointing={s.grad_checkpointing} "
        f"fused_adamw={trainer.optimizer.defaults.get('fused')} compile={s.compile}"
    )

    compute_dtype = torch.bfloat16 if s.dtype == "bfloat16" else torch.float32
    peak_tflops = matmul_peak_tflops(device, compute_dtype, s.peak_size)
    log(
        f"measured matmul peak ({str(compute_dtype).removeprefix('torch.')}, "
        f"{s.peak_size}^3): {peak_tflops:.4g} TFLOP/s"
    )

    try:
        flops = measure_flops(adapter, trainer, s)
    except Exception:  # MFU from the analytic count rather than no numbers at all
        traceback.print_exc()
        flops = analytic_flop_counts(s)
        trainer.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    log(
        f"FLOPs ({flops.method}; CFG rows included): forward {flops.forward_per_state / 1e9:.4g} "
        f"GFLOP per state (analytic {flops.forward_per_state_analytic / 1e9:.4g}); update "
        f"{flops.update_per_parent_model / 1e9:.4g} GFLOP per parent fwd+bwd "
        f"({flops.update_per_parent_model / flops.forward_per_state:.2f}x forward), "
        f"{flops.update_per_parent_executed / 1e9:.4g} executed with recompute"
    )

    bench = Bench(s, adapter, trainer)
    runners: dict[str, Callable[[int], Iteration]] = {
        "treegrpo": bench.tree,
        "dancegrpo": bench.dance,
    }
    runs: dict[str, list[Iteration]] = {name: [] for name in runners}
    errors: dict[str, str] = {}
    round_seconds: list[float] = []
    for round_index in range(s.warmup + s.repeats):
        timed = round_index >= s.warmup
        elapsed = time.perf_counter() - began
        if timed and any(runs.values()) and elapsed + round_seconds[-1] > s.time_budget:
            log(f"time budget {s.time_budget:.0f}s: {round_index - s.warmup} timed round(s) only")
            break
        round_start = time.perf_counter()
        for name, runner in runners.items():
            if name in errors:
                continue
            bench.phase = "setup"
            message: str | None = None
            try:
                result = runner(round_index)
            except torch.cuda.OutOfMemoryError as error:
                message = f"out of memory in the {bench.phase}: {str(error).splitlines()[0]}"
            except Exception as error:  # one failed phase must not lose the other's numbers
                traceback.print_exc()
                message = f"{type(error).__name__} in the {bench.phase}: {error}"
            if message is not None:
                errors[name] = message
                trainer.optimizer.zero_grad(set_to_none=True)
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                log(f"{name} round {round_index}: FAILED ({message})")
                continue
            if timed:
                runs[name].append(result)
            log(
                f"{name} {'timed' if timed else 'warmup'} round {round_index}: rollout "
                f"{result.rollout:.2f}s score {result.score:.3f}s update {result.update:.2f}s "
                f"(peak GB {fmt(result.rollout_peak_gb, '.1f')}/"
                f"{fmt(result.update_peak_gb, '.1f')}; loss "
                f"{result.metrics.get('loss', float('nan')):.3g}, ratio mean "
                f"{result.metrics.get('ratio_mean', float('nan')):.4f})"
            )
        round_seconds.append(time.perf_counter() - round_start)

    log("update breakdown: one micro-batch forward, forward + backward, optimizer step")
    try:
        breakdown = measure_breakdown(bench, flops, peak_tflops, s.profile)
    except Exception as error:  # diagnostics only: keep the timings above
        traceback.print_exc()
        breakdown = UpdateBreakdown(parents=s.micro_batch, error=f"{type(error).__name__}: {error}")
    trainer.optimizer.zero_grad(set_to_none=True)
    gc.collect()

    results = []
    for name in runners:
        if name in errors or not runs[name]:
            reason = errors.get(name, "no timed iteration")
            results.append(AlgorithmResult(algorithm=name, error=reason))
        else:
            results.append(summarise(name, runs[name], flops, peak_tflops))
    emit()
    print_table(results)
    tree, dance = results
    ratio = float("nan")
    if tree.seconds_per_iteration and dance.seconds_per_iteration:
        ratio = dance.seconds_per_iteration / tree.seconds_per_iteration
    for r in results:
        if r.error is None:
            emit(
                f"{r.algorithm}: update {fmt(r.update_tflops, '.4g')} TFLOP/s = MFU "
                f"{fmt(r.update_mfu, '.1%')} (executed incl. recompute "
                f"{fmt(r.update_executed_utilisation, '.1%')}), rollout "
                f"{fmt(r.rollout_tflops, '.4g')} TFLOP/s = MFU {fmt(r.rollout_mfu, '.1%')} "
                f"of {peak_tflops:.4g} TFLOP/s measured peak; target MFU >= 40% in both "
                f"phases: update {'met' if (r.update_mfu or 0.0) >= MFU_TARGET else 'NOT met'}, "
                f"rollout {'met' if (r.rollout_mfu or 0.0) >= MFU_TARGET else 'NOT met'}"
            )

    if breakdown.error is None:
        emit(
            f"update breakdown, one micro-batch of {breakdown.parents} parents: forward "
            f"{fmt(breakdown.forward_seconds, '.3f')}s ({fmt(breakdown.forward_tflops, '.4g')} "
            f"TFLOP/s), forward+backward {fmt(breakdown.forward_backward_seconds, '.3f')}s "
            f"({fmt(breakdown.forward_backward_tflops, '.4g')} TFLOP/s model = MFU "
            f"{fmt(breakdown.forward_backward_mfu, '.1%')}), grad clip + AdamW step "
            f"{fmt(breakdown.optimizer_seconds, '.3f')}s"
        )
        for op in breakdown.top_ops:
            emit(f"  {op['share']:6.1%} {op['self_ms']:9.2f} ms {op['calls']:6d}x  {op['op'][:90]}")
    else:
        emit(f"update breakdown failed: {breakdown.error}")

    report: dict[str, Any] = {
        "settings": asdict(s),
        "date": date,
        "device": device_line(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "model": {
            "size": s.size,
            "transformer_config": {
                k: list(v) if isinstance(v, tuple) else v for k, v in size.transformer.items()
            },
            "parameters": parameters,
            "trainable_parameters": trainable,
            "latent_shape": list(adapter.latent_shape),
            "text_tokens": size.text_tokens,
            "precision": precision,
            "text_encoders": "fixed random embeddings of the right shapes (real encoders would "
            "run once per prompt per iteration, not per step)",
            "decoder_and_reward": "no VAE; fixed random projection of the final latents",
        },
        "peak_matmul_tflops": peak_tflops,
        "flops": asdict(flops),
        "flops_method": f"{flops.method} on one state / one parent, scaled by evals / parents",
        "results": {r.algorithm: asdict(r) for r in results},
        "update_breakdown": asdict(breakdown),
        "tree_vs_dance_seconds_per_iteration": None if ratio != ratio else ratio,  # NaN: failed
        "wall_seconds": time.perf_counter() - began,
    }
    if s.json_path is not None:
        path = Path(s.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {path}")
    # DanceGRPO seconds / TreeGRPO seconds per iteration: above 1, TreeGRPO is faster.
    emit(f"tree_vs_dance_seconds_per_iteration: {ratio:.2f}x")
    return report


if __name__ == "__main__":
    main()
