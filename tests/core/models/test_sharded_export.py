"""A sharded run (`train.sharding: fsdp`, 2 gloo ranks) of a diffusers model: LoRA on FSDP2
trains what one process trains, and its DCP checkpoints export as today (`treegrpo export`
puts the shards together): a LoRA that diffusers loads, a pipeline folder that loads strictly.
Each export changes the stock pipeline's sample (a load that changes nothing fails) and, for
LoRA, gives the sample of the replicated run's export."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
from safetensors.torch import load_file
from tiny_diffusers import PROMPTS, run_config, save_sd3

from treegrpo.checkpoint import DCP_DIR, checkpoint_weights, latest_checkpoint
from treegrpo.cli import main
from treegrpo.distributed import launch_command
from treegrpo.export import export_checkpoint

CFG = 4.5
STEPS = 4  # run_config's sampling.steps
LAUNCH_TIMEOUT = 150  # a rank stuck in a collective fails the test instead of hanging it
# One epoch of 4 prompts on 2 ranks, one parent per forward: uneven shares pad.
SETTINGS: dict[str, Any] = {
    "sampling.cfg_scale": CFG,
    "prompts_per_epoch": 4,
    "train.micro_batch": 1,
    "train.sharding": "fsdp",
    "sample_every": 0,
}


@pytest.fixture(scope="module")
def sd3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sd3") / "tiny-sd3"
    save_sd3(folder, with_t5=True, seed=4)
    return folder


def _config_file(folder: Path, path: Path, **overrides: Any) -> Path:
    config = run_config(str(folder), **{**SETTINGS, **overrides})
    path.write_text(json.dumps(config.to_dict()))  # JSON is YAML
    return path


def _launch(argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", HF_HUB_OFFLINE="1")
    result = subprocess.run(
        launch_command(argv, 2, cpu=True),
        env=env,
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _train_both(config: Path, tmp_path: Path) -> tuple[Path, Path]:
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", "--config", str(config), "--quiet", "--out", str(one)]) == 0
    _launch(["train", "--config", str(config), "--quiet", "--set", "gpus=2", "--out", str(two)])
    checkpoint = latest_checkpoint(two / "checkpoints")
    assert checkpoint is not None and (checkpoint / DCP_DIR / ".metadata").is_file()
    assert not (checkpoint / "model.safetensors").exists()  # the shards are the only copy
    return one, two


def _metrics(run: Path) -> dict[str, float]:
    line = (run / "metrics.jsonl").read_text().splitlines()[-1]
    metrics: dict[str, float] = json.loads(line)["metrics"]
    return metrics


def _sample(pipe: Any) -> torch.Tensor:
    """The stock pipeline's latents for fixed prompts and starting noise."""
    channels, side = pipe.transformer.config.in_channels, pipe.transformer.config.sample_size
    latents = torch.randn((2, channels, side, side), generator=torch.Generator().manual_seed(9))
    out: torch.Tensor = pipe(
        prompt=PROMPTS[:2],
        num_inference_steps=STEPS,
        guidance_scale=CFG,
        latents=latents,
        height=side * pipe.vae_scale_factor,
        width=side * pipe.vae_scale_factor,
        output_type="latent",
    ).images
    return out


def _pipe(folder: Path) -> Any:
    return StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True)


@pytest.mark.slow
def test_sharded_lora_trains_like_one_process_and_exports_a_lora(sd3: Path, tmp_path: Path) -> None:
    config = _config_file(sd3, tmp_path / "lora.yaml", **{"train.lora_rank": 2, "train.lr": 3e-2})
    one, two = _train_both(config, tmp_path)
    assert _metrics(two)["grad_norm"] == pytest.approx(_metrics(one)["grad_norm"], rel=1e-5)
    assert _metrics(two)["sharding/padding_forwards"] >= 0

    replicated = export_checkpoint(one, "lora", tmp_path / "lora-one")
    sharded = export_checkpoint(two, "lora", tmp_path / "lora-two")
    a = load_file(str(replicated / "pytorch_lora_weights.safetensors"))
    b = load_file(str(sharded / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and all(".lora_" in key for key in a)
    for key in a:
        # AdamW turns a rounding-level gradient difference (two ranks sum in another order)
        # into up to lr * |dg| / eps where a gradient is below eps: 7.6e-6 seen at lr 3e-2.
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4)
    # The checkpoint's own export (what the API serves) was put together from the shards too.
    written = latest_checkpoint(two / "checkpoints") / "lora" / "pytorch_lora_weights.safetensors"  # type: ignore[operator]
    assert all(torch.equal(load_file(str(written))[k], b[k]) for k in b)

    pipe = _pipe(sd3)
    base = _sample(pipe)
    pipe.load_lora_weights(str(sharded))
    from_shards = _sample(pipe)
    pipe = _pipe(sd3)
    pipe.load_lora_weights(str(replicated))
    torch.testing.assert_close(from_shards, _sample(pipe), rtol=1e-4, atol=1e-5)
    assert (base - from_shards).abs().max() > 1e-2


@pytest.mark.slow
def test_a_sharded_full_fine_tune_exports_a_pipeline(sd3: Path, tmp_path: Path) -> None:
    config = _config_file(sd3, tmp_path / "full.yaml", **{"train.lr": 1e-3})
    two = tmp_path / "two"
    _launch(["train", "--config", str(config), "--quiet", "--set", "gpus=2", "--out", str(two)])
    out = export_checkpoint(two, "pipeline", tmp_path / "pipe")

    trained = checkpoint_weights(latest_checkpoint(two / "checkpoints"))  # type: ignore[arg-type]
    state = load_file(str(out / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert trained and all(torch.equal(state[name], tensor) for name, tensor in trained.items())
    transformer = SD3Transformer2DModel.from_config(
        SD3Transformer2DModel.load_config(out / "transformer")
    )
    transformer.load_state_dict(state, strict=True)  # every tensor, buffers included
    assert (_sample(_pipe(sd3)) - _sample(_pipe(out))).abs().max() > 1e-2
