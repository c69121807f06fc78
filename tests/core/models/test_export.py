"""Exports that diffusers loads: a LoRA run's adapters in `load_lora_weights` format, and a full
fine-tune as a pipeline folder. Each round trip reproduces the trainer's own ODE sample with the
stock pipeline class (same latents, prompt, guidance and step grid), and differs from the base
model's sample, so a load that silently changes nothing fails."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    FluxPipeline,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
)
from safetensors import safe_open
from safetensors.torch import load_file
from tiny_diffusers import PROMPTS, run_config, save_flux, save_sd3, save_sd15, single_thread

from treegrpo.cli import main
from treegrpo.export import ExportError, export_checkpoint, find_checkpoint, model_card
from treegrpo.models.flux import pack_latents, unpack_latents
from treegrpo.models.registry import load_model_for
from treegrpo.rewards.registry import load_run_rewards
from treegrpo.rollout import sample_ode
from treegrpo.trainer import Trainer

CFG = 4.5
# Fast learning, so one epoch moves the output far beyond the round trip's tolerance.
TRAIN = {"train.lr": 3e-2, "sampling.cfg_scale": CFG, "sample_every": 1}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def sd3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sd3") / "tiny-sd3"
    save_sd3(folder, with_t5=True, seed=4)
    return folder


@pytest.fixture(scope="module")
def sd15(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sd15") / "tiny-sd15"
    save_sd15(folder, seed=4)
    return folder


def train(folder: Path, run: Path, **overrides: Any) -> tuple[Trainer, torch.Tensor]:
    """One epoch into run/checkpoints; returns the trainer and fixed latents to sample from."""
    config = run_config(str(folder), **{**TRAIN, **overrides})
    adapter = load_model_for(config)
    trainer = Trainer(
        config, adapter, load_run_rewards(config), checkpoint_root=run / "checkpoints"
    )
    assert trainer.run() == "completed"
    latents = torch.randn((2, *adapter.latent_shape), generator=torch.Generator().manual_seed(9))
    return trainer, latents


def stock_sample(pipe: Any, trainer: Trainer, latents: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    size = trainer.adapter.latent_shape[1] * pipe.vae_scale_factor
    out: torch.Tensor = pipe(
        prompt=PROMPTS[:2],
        num_inference_steps=trainer.config.sampling.steps,
        guidance_scale=CFG,
        latents=latents.clone(),
        height=size,
        width=size,
        output_type="latent",
        **kwargs,
    ).images
    return out


def own_sample(trainer: Trainer, latents: torch.Tensor, cfg: float = CFG) -> torch.Tensor:
    adapter = trainer.adapter
    with torch.no_grad():
        return sample_ode(
            adapter, trainer.schedule, adapter.encode_prompts(PROMPTS[:2]), latents, cfg
        )


def assert_round_trip(ours: torch.Tensor, exported: torch.Tensor, base: torch.Tensor) -> None:
    torch.testing.assert_close(exported, ours, rtol=1e-4, atol=1e-5)
    # The trained model's sample is far from the base's: a no-op load cannot pass the above.
    assert (base - ours).abs().max() > 1e-2


def card(folder: Path, lr: float = TRAIN["train.lr"]) -> str:
    text = (folder / "README.md").read_text()
    assert "Final held-out reward: eval/brightness_mean" in text
    assert "Algorithm: treegrpo" in text and "Reward: 1 x brightness" in text
    assert "Epochs: 1 of 1" in text
    config = json.loads(text.split("```json\n")[1].split("```")[0])
    assert config["train"]["lr"] == lr
    return text


def test_sd3_lora_round_trip(sd3: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer, latents = train(sd3, run, **{"train.lora_rank": 2})
    ours = own_sample(trainer, latents)
    out = export_checkpoint(run, "lora", tmp_path / "lora")

    weights = out / "pytorch_lora_weights.safetensors"
    with safe_open(str(weights), framework="pt") as handle:
        keys = list(handle.keys())
        metadata = json.loads(handle.metadata()["lora_adapter_metadata"])
    assert keys and all(k.startswith("transformer.") and ".default." not in k for k in keys)
    assert metadata["transformer.r"] == 2 and metadata["transformer.lora_alpha"] == 2
    assert "Base model: `" + str(sd3) in card(out)
    # The checkpoint already carries the same export (what the API serves).
    written = load_file(str(find_checkpoint(run) / "lora" / "pytorch_lora_weights.safetensors"))
    exported = load_file(str(weights))
    assert written.keys() == exported.keys()
    assert all(torch.equal(written[k], exported[k]) for k in written)

    pipe = StableDiffusion3Pipeline.from_pretrained(sd3, local_files_only=True)
    base = stock_sample(pipe, trainer, latents)
    pipe.load_lora_weights(str(out))
    assert pipe.scheduler.sigmas.tolist() == pytest.approx(trainer.schedule.sigma.tolist())
    assert_round_trip(ours, stock_sample(pipe, trainer, latents), base)

    # As a pipeline folder, the adapters fused into the weights.
    fused = export_checkpoint(run, "pipeline", tmp_path / "fused")
    assert "with the LoRA adapters fused in" in card(fused)
    pipe = StableDiffusion3Pipeline.from_pretrained(fused, local_files_only=True)
    assert not any("lora" in name for name, _ in pipe.transformer.named_parameters())
    assert_round_trip(ours, stock_sample(pipe, trainer, latents), base)


def test_flux_lora_round_trip(tmp_path: Path) -> None:
    """FLUX: transformer.* keys into FluxPipeline, guidance 3.5 embedded, true CFG off."""
    folder = tmp_path / "tiny-flux"
    save_flux(folder, seed=4)
    run = tmp_path / "run"
    overrides = {"train.lora_rank": 2, "sampling.cfg_scale": 1.0, "sampling.height": 8}
    trainer, latents = train(folder, run, **overrides)
    ours = own_sample(trainer, latents, cfg=1.0)
    out = export_checkpoint(run, "lora", tmp_path / "lora")
    with safe_open(str(out / "pytorch_lora_weights.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    assert any(k.startswith("transformer.single_transformer_blocks.") for k in keys)
    assert all(k.startswith("transformer.") and ".default." not in k for k in keys)

    pipe = FluxPipeline.from_pretrained(folder, local_files_only=True)

    def stock() -> torch.Tensor:
        packed = pipe(
            prompt=PROMPTS[:2],
            num_inference_steps=trainer.config.sampling.steps,
            guidance_scale=3.5,
            latents=pack_latents(latents.clone()),
            height=8,
            width=8,
            output_type="latent",
        ).images
        return unpack_latents(packed, 8, 8)

    base = stock()
    pipe.load_lora_weights(str(out))
    assert pipe.scheduler.sigmas.tolist() == pytest.approx(trainer.schedule.sigma.tolist())
    assert_round_trip(ours, stock(), base)


def test_sd15_lora_round_trip(sd15: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer, latents = train(sd15, run, **{"train.lora_rank": 2})
    ours = own_sample(trainer, latents)
    out = export_checkpoint(run, "lora", tmp_path / "lora")
    with safe_open(str(out / "pytorch_lora_weights.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    assert keys and all(k.startswith("unet.") for k in keys)

    pipe = StableDiffusionPipeline.from_pretrained(sd15, local_files_only=True)
    # The trainer's deterministic sampler is DDIM (eta 0) on the folder's noise schedule, with no
    # x0 clipping (SD1.5's own config says clip_sample false; the tiny folder's omits it, and
    # DDIMScheduler would then default to clipping).
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    base = stock_sample(pipe, trainer, latents, eta=0.0)
    pipe.load_lora_weights(str(out))
    assert_round_trip(ours, stock_sample(pipe, trainer, latents, eta=0.0), base)


def test_sd3_full_fine_tune_pipeline_round_trip(sd3: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer, latents = train(sd3, run, **{"train.lr": 1e-3})
    ours = own_sample(trainer, latents)
    with pytest.raises(ExportError, match="--format pipeline"):
        export_checkpoint(run, "lora", tmp_path / "refused")
    out = export_checkpoint(run, "pipeline", tmp_path / "pipe")
    assert (out / "model_index.json").is_file()
    assert "fully fine-tuned" in card(out, lr=1e-3)

    # Loads strictly: every tensor, buffers (pos_embed.pos_embed) included, is in the export.
    transformer = SD3Transformer2DModel.from_config(
        SD3Transformer2DModel.load_config(out / "transformer")
    )
    state = load_file(str(out / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert "pos_embed.pos_embed" in state
    transformer.load_state_dict(state, strict=True)

    base = stock_sample(
        StableDiffusion3Pipeline.from_pretrained(sd3, local_files_only=True), trainer, latents
    )
    pipe = StableDiffusion3Pipeline.from_pretrained(out, local_files_only=True)
    assert_round_trip(ours, stock_sample(pipe, trainer, latents), base)


def test_cli_exports_a_run_folder(
    sd3: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    train(sd3, run, **{"train.lora_rank": 2, "sample_every": 0, "sampling.cfg_scale": 1.0})
    out = tmp_path / "lora"
    assert main(["export", str(run), "--format", "lora", "--out", str(out)]) == 0
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    # sample_every 0, but the final epoch always logs its gallery: the card has its reward.
    assert "Final held-out reward: eval/brightness_mean" in (out / "README.md").read_text()
    # A non-empty --out, a missing epoch and a folder without checkpoints are refused.
    assert main(["export", str(run), "--out", str(out)]) == 2
    assert main(["export", str(run), "--epoch", "7", "--out", str(tmp_path / "x")]) == 2
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "y")]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err

    # A checkpoint without its lora/ (written before exports existed): the adapter's prefix
    # comes from the model, and the export is the same.
    checkpoint = find_checkpoint(run)
    written = load_file(str(checkpoint / "lora" / "pytorch_lora_weights.safetensors"))
    shutil.rmtree(checkpoint / "lora")
    again = export_checkpoint(checkpoint, "lora", tmp_path / "again")
    rebuilt = load_file(str(again / "pytorch_lora_weights.safetensors"))
    assert written.keys() == rebuilt.keys()
    assert all(torch.equal(written[k], rebuilt[k]) for k in written)


def test_a_model_that_is_no_pipeline_folder_has_no_pipeline_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "checkpoints" / "epoch-000001"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"")
    config = run_config("digits").to_dict()
    (checkpoint / "state.json").write_text(json.dumps({"state": {"epoch": 1}, "config": config}))
    assert (
        main(["export", str(tmp_path), "--format", "pipeline", "--out", str(tmp_path / "p")]) == 2
    )
    assert "'digits' is not a diffusers pipeline folder" in capsys.readouterr().err


def test_model_card_of_a_weighted_reward_run() -> None:
    config = run_config("digits", reward={"brightness": 0.8, "contrast": 0.2}).to_dict()
    state = {
        "epoch": 2,
        "held_out": {"eval/brightness_mean": 0.5, "eval/contrast_mean": 0.25},
        "held_out_epoch": 2,
    }
    text = model_card({"config": config, "state": state}, "lora", "transformer")
    assert "- Reward: 0.8 x brightness + 0.2 x contrast" in text
    # 0.8 * 0.5 + 0.2 * 0.25 = 0.45
    assert "- Final held-out reward: weighted 0.4500, eval/brightness_mean 0.5000" in text
    assert "(gallery of epoch 2)" in text and "- Epochs: 2 of 1" in text
    assert "`digits` is the studio's own" in text and "from_pretrained" not in text
