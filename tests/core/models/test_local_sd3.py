"""Loading an SD3-family pipeline folder (tiny, random-init, saved here) and training it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusion3Pipeline
from network_guard import no_network
from safetensors.torch import load_file
from tiny_diffusers import (
    PROMPTS,
    MetricsRecorder,
    assert_finite,
    assert_same_weights,
    changed,
    run_config,
    save_sd3,
    single_thread,
    snapshot,
)

from treegrpo.models.local import load_local_model
from treegrpo.models.registry import load_model
from treegrpo.models.sd3 import SD3StyleAdapter
from treegrpo.rewards.registry import load_run_rewards
from treegrpo.trainer import Trainer


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def sd3(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StableDiffusion3Pipeline]:
    folder = tmp_path_factory.mktemp("sd3") / "tiny-sd3"
    return folder, save_sd3(folder, with_t5=True)


@pytest.fixture(scope="module")
def sd3_no_t5(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StableDiffusion3Pipeline]:
    folder = tmp_path_factory.mktemp("sd3") / "tiny-sd3-no-t5"
    return folder, save_sd3(folder, with_t5=False, seed=1)


def load(folder: Path, dtype: str = "float32") -> SD3StyleAdapter:
    adapter = load_model(str(folder), "cpu", dtype)
    assert isinstance(adapter, SD3StyleAdapter)
    return adapter


def test_loads_flow_family_with_the_saved_weights(
    sd3: tuple[Path, StableDiffusion3Pipeline],
) -> None:
    folder, pipe = sd3
    adapter = load(folder)
    assert adapter.family == "flow"
    assert adapter.name == str(folder)
    assert adapter.latent_shape == (4, 8, 8)
    assert adapter.scheduler_config is not None and adapter.scheduler_config["shift"] == 3.0
    assert adapter.autocast_dtype is None
    assert_same_weights(pipe.transformer, adapter.denoiser)
    encoder = adapter.encode_text
    for (_, loaded), saved in zip(
        encoder.clips, [pipe.text_encoder, pipe.text_encoder_2], strict=True
    ):
        assert_same_weights(saved, loaded)
    assert_same_weights(pipe.text_encoder_3, encoder.t5[1])
    assert_same_weights(pipe.vae, adapter.decode_fn.vae)
    # The denoiser trains; the text encoders and the VAE are frozen and in eval mode.
    assert all(p.requires_grad for p in adapter.denoiser.parameters())
    for module in [encoder.clips[0][1], encoder.clips[1][1], encoder.t5[1], adapter.decode_fn.vae]:
        assert not any(p.requires_grad for p in module.parameters())
        assert not module.training


@pytest.mark.parametrize("fixture", ["sd3", "sd3_no_t5"])
def test_text_conditioning_matches_diffusers(fixture: str, request: pytest.FixtureRequest) -> None:
    folder, pipe = request.getfixturevalue(fixture)
    adapter = load(folder)
    cond = adapter.encode_prompts([*PROMPTS, ""])
    tokens, _, pooled, _ = pipe.encode_prompt(
        [*PROMPTS, ""], None, None, device=torch.device("cpu"), do_classifier_free_guidance=False
    )
    # (B, 16 CLIP tokens + 256 T5 tokens, joint_attention_dim 32); pooled (B, 32 + 32)
    assert cond.tensors["encoder_hidden_states"].shape == (4, 16 + 256, 32)
    assert cond.tensors["pooled_projections"].shape == (4, 64)
    # Same maths, but the batches differ (our encoder pads and batches prompts its own way), so
    # float32 sums run in another order: ~1e-5 apart, depending on the thread count.
    torch.testing.assert_close(cond.tensors["encoder_hidden_states"], tokens, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cond.tensors["pooled_projections"], pooled, atol=1e-4, rtol=1e-4)
    if fixture == "sd3_no_t5":
        assert adapter.encode_text.t5 is None
        assert not cond.tensors["encoder_hidden_states"][:, 16:].any()


def test_decode_undoes_the_latent_normalisation(sd3: tuple[Path, StableDiffusion3Pipeline]) -> None:
    folder, pipe = sd3
    adapter = load(folder)
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    images = adapter.decode(latents)
    with torch.no_grad():
        z = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
        expected = (pipe.vae.decode(z).sample / 2 + 0.5).clamp(0, 1)
    assert images.shape == (3, 3, 8, 8)
    torch.testing.assert_close(images, expected)


def test_one_treegrpo_epoch_full_fine_tune(sd3: tuple[Path, StableDiffusion3Pipeline]) -> None:
    folder, _ = sd3
    config = run_config(str(folder))
    adapter = load_model(config.model, config.device, config.dtype)
    before = snapshot(adapter.denoiser)
    recorder = MetricsRecorder()
    trainer = Trainer(config, adapter, load_run_rewards(config), callbacks=[recorder])
    assert trainer.run() == "completed"
    (metrics,) = recorder.epochs
    assert_finite(metrics)
    assert metrics["trained_edges"] == 2 * (2 + 4)  # 2 trees x (2 + 4) window edges
    assert changed(before, adapter.denoiser)


def test_lora_trains_only_adapters_and_checkpoints_only_them(
    sd3_no_t5: tuple[Path, StableDiffusion3Pipeline], tmp_path: Path
) -> None:
    folder, _ = sd3_no_t5
    config = run_config(str(folder), **{"train.lora_rank": 2, "sampling.cfg_scale": 1.0})
    adapter = load_model(config.model, config.device, config.dtype)
    base = snapshot(adapter.denoiser)
    recorder = MetricsRecorder()
    trainer = Trainer(
        config, adapter, load_run_rewards(config), [recorder], checkpoint_root=tmp_path / "ckpt"
    )
    lora = snapshot(adapter.denoiser)
    assert trainer.run() == "completed"
    assert_finite(recorder.epochs[0])
    trainable = {name for name, p in adapter.denoiser.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    moved = changed(lora, adapter.denoiser)
    assert moved and moved <= trainable
    # The base weights are untouched (LoRA wraps a layer: its weights move under `base_layer`).
    params = dict(adapter.denoiser.named_parameters())
    for name, tensor in base.items():
        module, _, leaf = name.rpartition(".")
        current = params.get(name, params.get(f"{module}.base_layer.{leaf}"))
        assert current is not None and torch.equal(tensor, current), name
    saved = load_file(str(tmp_path / "ckpt" / "epoch-000001" / "model.safetensors"))
    assert set(saved) == trainable


def test_gradient_checkpointing_trains(sd3_no_t5: tuple[Path, StableDiffusion3Pipeline]) -> None:
    folder, _ = sd3_no_t5
    config = run_config(
        str(folder), **{"train.grad_checkpointing": True, "sampling.cfg_scale": 1.0}
    )
    adapter = load_model(config.model, config.device, config.dtype)
    before = snapshot(adapter.denoiser)
    recorder = MetricsRecorder()
    Trainer(config, adapter, load_run_rewards(config), [recorder]).run()
    assert adapter.denoiser.is_gradient_checkpointing
    assert_finite(recorder.epochs[0])
    assert changed(before, adapter.denoiser)


def test_bfloat16_keeps_float32_master_weights(
    sd3: tuple[Path, StableDiffusion3Pipeline],
) -> None:
    folder, _ = sd3
    adapter = load(folder, "bfloat16")
    encoder = adapter.encode_text
    assert adapter.autocast_dtype == torch.bfloat16
    assert {p.dtype for p in adapter.denoiser.parameters()} == {torch.float32}
    for module in [encoder.clips[0][1], encoder.clips[1][1], adapter.decode_fn.vae]:
        assert {p.dtype for p in module.parameters()} == {torch.bfloat16}
    schedule = adapter.make_schedule(4)
    x = adapter.initial_noise(2, torch.Generator().manual_seed(0))
    out = adapter.predict(x, 0, schedule, adapter.encode_prompts(PROMPTS[:2]), cfg_scale=2.0)
    assert out.dtype == torch.float32 and out.isfinite().all()
    assert adapter.decode(x).dtype == torch.float32
    # With LoRA the frozen base drops to bf16; the adapters train in float32.
    adapter.enable_lora(2)
    for name, param in adapter.denoiser.named_parameters():
        assert param.dtype == (torch.float32 if param.requires_grad else torch.bfloat16), name
    out = adapter.predict(x, 1, schedule, adapter.encode_prompts(PROMPTS[:2]), cfg_scale=1.0)
    out.square().mean().backward()
    grads = [p.grad for p in adapter.trainable_parameters()]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)


def test_loading_does_no_network_io(
    sd3: tuple[Path, StableDiffusion3Pipeline], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = sd3
    with no_network(monkeypatch) as attempts:
        adapter = load(folder)
        adapter.encode_prompts(PROMPTS)
    assert attempts == []


def test_wrong_folders_give_clear_errors(
    sd3: tuple[Path, StableDiffusion3Pipeline], tmp_path: Path
) -> None:
    folder, _ = sd3
    with pytest.raises(ValueError, match="does not exist"):
        load_model(str(tmp_path / "missing"), "cpu")
    with pytest.raises(ValueError, match="does not exist"):
        load_local_model(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"no model_index\.json"):
        load_model(str(tmp_path), "cpu")

    other = tmp_path / "flux"
    shutil.copytree(folder, other)
    index = json.loads((other / "model_index.json").read_text())
    (other / "model_index.json").write_text(json.dumps({**index, "_class_name": "KolorsPipeline"}))
    with pytest.raises(ValueError, match=r"'KolorsPipeline'.*StableDiffusion3Pipeline"):
        load_model(str(other), "cpu")
    (other / "model_index.json").write_text(json.dumps({**index, "_class_name": "FluxPipeline"}))
    with pytest.raises(ValueError, match=r"holds a 'SD3Transformer2DModel', expected 'FluxT"):
        load_model(str(other), "cpu")

    (other / "model_index.json").write_text(json.dumps(index))
    shutil.rmtree(other / "vae")
    with pytest.raises(ValueError, match="lacks the component 'vae'"):
        load_model(str(other), "cpu")

    with pytest.raises(ValueError, match="dtype"):
        load_local_model(folder, "cpu", "float64")


@pytest.mark.parametrize("steps", [4, 10])
def test_ode_sample_equals_the_pipelines_own(
    sd3: tuple[Path, StableDiffusion3Pipeline], steps: int
) -> None:
    """A T-step ODE sample on the model's grid is the pipeline's own output for the same latents
    (the grid comes from the folder's scheduler, shift 3: sigmas 1, .960, ..., .009, 0 at 10)."""
    from treegrpo.rollout import sample_ode

    folder, _ = sd3
    adapter = load(folder)
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True)
    prompts = PROMPTS[:2]
    latents = torch.randn((2, *adapter.latent_shape), generator=torch.Generator().manual_seed(5))
    schedule = adapter.make_schedule(steps)
    ours = sample_ode(adapter, schedule, adapter.encode_prompts(prompts), latents, cfg_scale=4.5)
    height = adapter.latent_shape[1] * pipe.vae_scale_factor
    theirs = pipe(
        prompt=prompts,
        num_inference_steps=steps,
        guidance_scale=4.5,
        latents=latents.clone(),
        height=height,
        width=height,
        output_type="latent",
    ).images
    assert pipe.scheduler.sigmas.tolist() == pytest.approx(schedule.sigma.tolist(), abs=1e-7)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
