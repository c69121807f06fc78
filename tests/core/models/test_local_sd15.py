"""Loading an SD1.5-family pipeline folder (tiny, random-init, saved here) and training it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from network_guard import no_network
from safetensors.torch import load_file
from tiny_diffusers import (
    PROMPTS,
    MetricsRecorder,
    assert_finite,
    assert_same_weights,
    changed,
    run_config,
    save_sd15,
    single_thread,
    snapshot,
)

from treegrpo.models.registry import load_model
from treegrpo.models.sd15 import SD15Adapter
from treegrpo.rewards.registry import load_run_rewards
from treegrpo.schedules import DDIMSchedule
from treegrpo.trainer import Trainer


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def sd15(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StableDiffusionPipeline]:
    folder = tmp_path_factory.mktemp("sd15") / "tiny-sd15"
    return folder, save_sd15(folder)


def load(folder: Path, dtype: str = "float32") -> SD15Adapter:
    adapter = load_model(str(folder), "cpu", dtype)
    assert isinstance(adapter, SD15Adapter)
    return adapter


def test_loads_epsilon_family_with_the_saved_weights(
    sd15: tuple[Path, StableDiffusionPipeline],
) -> None:
    folder, pipe = sd15
    adapter = load(folder)
    assert adapter.family == "epsilon"
    assert adapter.latent_shape == (4, 8, 8)
    assert adapter.autocast_dtype is None
    assert_same_weights(pipe.unet, adapter.denoiser)
    assert_same_weights(pipe.text_encoder, adapter.encode_text.encoder)
    assert_same_weights(pipe.vae, adapter.decode_fn.vae)
    assert all(p.requires_grad for p in adapter.denoiser.parameters())
    for module in [adapter.encode_text.encoder, adapter.decode_fn.vae]:
        assert not any(p.requires_grad for p in module.parameters())
        assert not module.training
    # Text conditioning is CLIP's last hidden states, exactly as the pipeline computes it.
    cond = adapter.encode_prompts([*PROMPTS, ""])
    expected, _ = pipe.encode_prompt([*PROMPTS, ""], torch.device("cpu"), 1, False)
    assert set(cond.tensors) == {"encoder_hidden_states"}
    assert cond.tensors["encoder_hidden_states"].shape == (4, 16, 32)
    torch.testing.assert_close(cond.tensors["encoder_hidden_states"], expected)


def test_schedule_uses_the_models_noise_schedule(
    sd15: tuple[Path, StableDiffusionPipeline],
) -> None:
    folder, pipe = sd15
    adapter = load(folder)
    # SD1.5 ships a PNDM config; its betas define the same alphas DDIM uses.
    reference = DDIMScheduler.from_config(pipe.scheduler.config)
    schedule = adapter.make_schedule(4)
    assert isinstance(schedule, DDIMSchedule)
    # Leading spacing with steps_offset 1: 1000 // 4 = 250 apart, starting at 751.
    assert schedule.timesteps.tolist() == [751, 501, 251, 1]
    torch.testing.assert_close(schedule.alpha[0], reference.alphas_cumprod[751])
    torch.testing.assert_close(schedule.alpha_prev[0], reference.alphas_cumprod[501])
    torch.testing.assert_close(schedule.alpha_prev[-1], reference.alphas_cumprod[0])


def test_decode(sd15: tuple[Path, StableDiffusionPipeline]) -> None:
    folder, pipe = sd15
    adapter = load(folder)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
        expected = (pipe.vae.decode(z).sample / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(adapter.decode(latents), expected)


def test_one_treegrpo_epoch_full_fine_tune(sd15: tuple[Path, StableDiffusionPipeline]) -> None:
    folder, _ = sd15
    config = run_config(str(folder), **{"sampling.eta": 1.0})
    adapter = load_model(config.model, config.device, config.dtype)
    before = snapshot(adapter.denoiser)
    recorder = MetricsRecorder()
    assert Trainer(config, adapter, load_run_rewards(config), [recorder]).run() == "completed"
    (metrics,) = recorder.epochs
    assert_finite(metrics)
    assert metrics["trained_edges"] == 2 * (2 + 4)
    assert changed(before, adapter.denoiser)


def test_lora_with_gradient_checkpointing(
    sd15: tuple[Path, StableDiffusionPipeline], tmp_path: Path
) -> None:
    folder, _ = sd15
    config = run_config(
        str(folder),
        **{
            "sampling.eta": 1.0,
            "sampling.cfg_scale": 1.0,
            "train.lora_rank": 2,
            "train.grad_checkpointing": True,
        },
    )
    adapter = load_model(config.model, config.device, config.dtype)
    recorder = MetricsRecorder()
    trainer = Trainer(
        config, adapter, load_run_rewards(config), [recorder], checkpoint_root=tmp_path / "ckpt"
    )
    assert adapter.denoiser.is_gradient_checkpointing
    before = snapshot(adapter.denoiser)
    assert trainer.run() == "completed"
    assert_finite(recorder.epochs[0])
    trainable = {name for name, p in adapter.denoiser.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    # Every attention projection got an adapter: to_q, to_k, to_v and to_out.0.
    wrapped = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable}
    assert wrapped == {"to_q", "to_k", "to_v", "0"}
    moved = changed(before, adapter.denoiser)
    assert moved and moved <= trainable
    saved = load_file(str(tmp_path / "ckpt" / "epoch-000001" / "model.safetensors"))
    assert set(saved) == trainable


def test_bfloat16_and_lora_cast_down(sd15: tuple[Path, StableDiffusionPipeline]) -> None:
    folder, _ = sd15
    adapter = load(folder, "bfloat16")
    assert adapter.autocast_dtype == torch.bfloat16
    assert {p.dtype for p in adapter.denoiser.parameters()} == {torch.float32}
    assert {p.dtype for p in adapter.encode_text.encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in adapter.decode_fn.vae.parameters()} == {torch.bfloat16}
    adapter.enable_lora(2)
    for name, param in adapter.denoiser.named_parameters():
        assert param.dtype == (torch.float32 if param.requires_grad else torch.bfloat16), name
    schedule = adapter.make_schedule(4)
    x = adapter.initial_noise(2, torch.Generator().manual_seed(0))
    out = adapter.predict(x, 1, schedule, adapter.encode_prompts(PROMPTS[:2]), cfg_scale=3.0)
    assert out.dtype == torch.float32 and out.isfinite().all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in adapter.trainable_parameters())
    assert adapter.decode(x).isfinite().all()


def test_loading_does_no_network_io(
    sd15: tuple[Path, StableDiffusionPipeline], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = sd15
    with no_network(monkeypatch) as attempts:
        load(folder).encode_prompts(PROMPTS)
    assert attempts == []


def test_v_prediction_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "sd2-v"
    save_sd15(folder, prediction_type="v_prediction")
    with pytest.raises(ValueError, match="prediction_type 'v_prediction'"):
        load_model(str(folder), "cpu")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
