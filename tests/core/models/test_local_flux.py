"""Loading a FLUX.1-family pipeline folder (tiny, random-init, saved here) and training it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from diffusers import FluxPipeline
from network_guard import no_network
from tiny_diffusers import (
    PROMPTS,
    MetricsRecorder,
    assert_finite,
    changed,
    run_config,
    save_flux,
    single_thread,
    snapshot,
)

from treegrpo.config import ConfigError
from treegrpo.grids import dynamic_shift_mu
from treegrpo.models.flux import FluxAdapter, latent_image_ids, pack_latents, unpack_latents
from treegrpo.models.registry import load_model, load_model_for
from treegrpo.rewards.registry import load_run_rewards
from treegrpo.trainer import Trainer

SIZE = 8  # pixels = latent cells (the tiny VAE does not downsample): 4 x 4 packed tokens


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FluxPipeline]:
    folder = tmp_path_factory.mktemp("flux") / "tiny-flux"
    return folder, save_flux(folder)


def load(folder: Path, **kwargs: object) -> FluxAdapter:
    adapter = load_model(str(folder), "cpu", size=(SIZE, SIZE), **kwargs)  # type: ignore[arg-type]
    assert isinstance(adapter, FluxAdapter)
    return adapter


def flux_config(folder: Path, **overrides: object) -> object:
    return run_config(str(folder), **{"sampling.height": SIZE, "sampling.width": SIZE, **overrides})


def test_packing_matches_diffusers_and_round_trips() -> None:
    latents = torch.randn(2, 4, 6, 8, generator=torch.Generator().manual_seed(0))
    packed = pack_latents(latents)
    assert packed.shape == (2, 3 * 4, 16)
    torch.testing.assert_close(packed, FluxPipeline._pack_latents(latents, 2, 4, 6, 8))
    assert torch.equal(unpack_latents(packed, 6, 8), latents)
    expected = FluxPipeline._prepare_latent_image_ids(2, 3, 4, "cpu", torch.float32)
    assert torch.equal(latent_image_ids(6, 8), expected)


def test_loads_with_guidance_embedding_and_true_cfg_off(flux: tuple[Path, FluxPipeline]) -> None:
    folder, pipe = flux
    adapter = load(folder)
    assert adapter.family == "flow" and adapter.latent_shape == (4, SIZE, SIZE)
    assert adapter.guidance == 3.5 and adapter.default_cfg_scale == 1.0
    assert adapter.image_seq_len() == (SIZE // 2) ** 2
    saved = pipe.transformer.state_dict()
    for name, tensor in adapter.denoiser.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    cond = adapter.encode_prompts(PROMPTS)
    prompt_embeds, pooled, _ = pipe.encode_prompt(PROMPTS, PROMPTS, max_sequence_length=512)
    # Loaded and in-memory T5s may pick different attention kernels: float noise only.
    tolerance = {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(cond.tensors["encoder_hidden_states"], prompt_embeds, **tolerance)
    torch.testing.assert_close(cond.tensors["pooled_projections"], pooled, **tolerance)
    assert cond.tensors["guidance"].tolist() == [3.5] * 3
    # The config's null cfg_scale resolves to the model's own: one call per step.
    from treegrpo.algorithms import resolve_for_model

    config = flux_config(folder)
    resolved, _ = resolve_for_model(config, adapter)  # type: ignore[arg-type]
    assert resolved.sampling.cfg_scale == 1.0
    assert load(folder, guidance=5.0).encode_prompts(["a"]).tensors["guidance"].item() == 5.0


@pytest.mark.parametrize("steps", [4, 10])
def test_ode_sample_equals_the_pipelines_own(flux: tuple[Path, FluxPipeline], steps: int) -> None:
    """FluxPipeline's grid (linspace(1, 1/T, T) shifted dynamically by mu of the token count),
    packing, ids, t / 1000 and guidance 3.5: the trainer's ODE sample is the pipeline's."""
    from treegrpo.rollout import sample_ode

    folder, _ = flux
    adapter = load(folder)
    pipe = FluxPipeline.from_pretrained(folder, local_files_only=True)
    prompts = PROMPTS[:2]
    latents = torch.randn((2, *adapter.latent_shape), generator=torch.Generator().manual_seed(5))
    schedule = adapter.make_schedule(steps)
    ours = sample_ode(adapter, schedule, adapter.encode_prompts(prompts), latents, cfg_scale=1.0)
    theirs = pipe(
        prompt=prompts,
        num_inference_steps=steps,
        guidance_scale=3.5,
        latents=pack_latents(latents.clone()),
        height=SIZE,
        width=SIZE,
        output_type="latent",
    ).images
    assert pipe.scheduler.sigmas.tolist() == pytest.approx(schedule.sigma.tolist(), abs=1e-7)
    mu = dynamic_shift_mu(pipe.scheduler.config, (SIZE // 2) ** 2)
    assert mu < 0.5  # 16 tokens: below the base shift, so the grid is not SD3's shift-3 grid
    torch.testing.assert_close(ours, unpack_latents(theirs, SIZE, SIZE), rtol=1e-4, atol=1e-5)
    # The guidance embedding is live: another guidance gives another sample.
    other = load(folder, guidance=1.0)
    moved = sample_ode(other, schedule, other.encode_prompts(prompts), latents, cfg_scale=1.0)
    assert not torch.allclose(moved, ours)


@pytest.mark.parametrize("algorithm", ["treegrpo", "dancegrpo", "mixgrpo"])
def test_one_epoch_full_fine_tune(flux: tuple[Path, FluxPipeline], algorithm: str) -> None:
    folder, _ = flux
    overrides: dict[str, object] = {"algorithm": algorithm}
    if algorithm != "treegrpo":
        overrides |= {"flat.group_size": 4, "flat.window": 2}
    config = flux_config(folder, **overrides)
    adapter = load_model_for(config)  # type: ignore[arg-type]
    before = snapshot(adapter.denoiser)
    recorder = MetricsRecorder()
    trainer = Trainer(config, adapter, load_run_rewards(config), callbacks=[recorder])  # type: ignore[arg-type]
    assert trainer.run() == "completed"
    assert_finite(recorder.epochs[0])
    assert changed(before, adapter.denoiser)


def test_lora_trains_only_adapters(flux: tuple[Path, FluxPipeline]) -> None:
    folder, _ = flux
    config = flux_config(folder, **{"train.lora_rank": 2})
    adapter = load_model_for(config)  # type: ignore[arg-type]
    recorder = MetricsRecorder()
    trainer = Trainer(config, adapter, load_run_rewards(config), [recorder])  # type: ignore[arg-type]
    lora = snapshot(adapter.denoiser)
    assert trainer.run() == "completed"
    assert_finite(recorder.epochs[0])
    trainable = {name for name, p in adapter.denoiser.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    # Both block kinds carry adapters: the double blocks' text stream and the single blocks.
    assert any("add_q_proj.lora_A" in name for name in trainable)
    assert any("ff_context.net.2.lora_A" in name for name in trainable)
    assert any("single_transformer_blocks" in name for name in trainable)
    moved = changed(lora, adapter.denoiser)
    assert moved and moved <= trainable


def test_sizes_are_checked_against_vae_and_packing(flux: tuple[Path, FluxPipeline]) -> None:
    folder, _ = flux
    assert load_model(str(folder), "cpu", size=(12, 16)).latent_shape == (4, 12, 16)
    with pytest.raises(ConfigError, match=r"sampling.height: 9 is not a positive multiple of 2"):
        load_model(str(folder), "cpu", size=(9, 8))
    with pytest.raises(ConfigError, match="nearest valid size is 8 or 10"):
        load_model(str(folder), "cpu", size=(8, 9))


def test_guidance_is_refused_where_there_is_no_embedding(tmp_path: Path) -> None:
    folder = tmp_path / "schnell-like"
    save_flux(folder, guidance_embeds=False)
    with pytest.raises(ConfigError, match=r"sampling\.guidance: this FLUX transformer has no"):
        load_model(str(folder), "cpu", size=(SIZE, SIZE), guidance=3.5)
    adapter = load_model(str(folder), "cpu", size=(SIZE, SIZE))
    assert isinstance(adapter, FluxAdapter) and adapter.guidance is None
    assert adapter.default_cfg_scale == 4.5
    assert "guidance" not in adapter.encode_prompts(["a"]).tensors
    with pytest.raises(ConfigError, match=r"sampling\.guidance"):
        load_model("tiny-random", "cpu", guidance=3.5)


def test_loading_does_no_network_io(
    flux: tuple[Path, FluxPipeline], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = flux
    with no_network(monkeypatch) as attempts:
        adapter = load(folder)
        adapter.encode_prompts(["a"])
    assert attempts == []


@pytest.mark.parametrize("algorithm", ["treegrpo", "mixgrpo"])
def test_resume_is_exact(flux: tuple[Path, FluxPipeline], tmp_path: Path, algorithm: str) -> None:
    """2 epochs + resume + 2 epochs give the weights and metrics of 4 straight epochs."""
    from safetensors.torch import load_file

    from treegrpo.cli import main

    folder, _ = flux
    common = [
        "--preset",
        f"tiny-{algorithm}",
        "--quiet",
        *("--set", f"model={folder}", "--set", f"sampling.height={SIZE}"),
        *("--set", "flat.window=2", "--set", "checkpoint_every=1"),
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", *common, "--set", "epochs=4", "--out", str(straight)]) == 0
    assert main(["train", *common, "--set", "epochs=2", "--out", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--set", "epochs=4", "--quiet"]) == 0
    a = load_file(str(straight / "checkpoints" / "epoch-000004" / "model.safetensors"))
    b = load_file(str(split / "checkpoints" / "epoch-000004" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    lines = [(run / "metrics.jsonl").read_text().splitlines() for run in (straight, split)]
    assert lines[0] == lines[1] or len(lines[0]) == len(lines[1]) == 4
