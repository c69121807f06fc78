"""LoRA runs are reproducible from their seed: the adapters' initial draw comes from the run's
seed, not from whatever the global RNG held (issue 15: same-seed LoRA runs used to differ)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tiny_diffusers import run_config, save_sd3, single_thread

from treegrpo.checkpoint import latest_checkpoint
from treegrpo.config import RunConfig
from treegrpo.models.registry import load_model
from treegrpo.rewards.registry import load_run_rewards
from treegrpo.trainer import Trainer


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sd3") / "tiny-sd3"
    save_sd3(path, with_t5=False, seed=3)
    return path


def lora_config(folder: Path, epochs: int, seed: int = 7) -> RunConfig:
    return run_config(
        str(folder),
        **{
            "train.lora_rank": 2,
            "sampling.cfg_scale": 1.0,
            "epochs": epochs,
            "seed": seed,
            "sample_every": 0,
        },
    )


def train(
    config: RunConfig, root: Path | None = None, resume: bool = False
) -> dict[str, torch.Tensor]:
    adapter = load_model(config.model, config.device, config.dtype)
    trainer = Trainer(config, adapter, load_run_rewards(config), checkpoint_root=root)
    if resume:
        assert root is not None
        checkpoint = latest_checkpoint(root)
        assert checkpoint is not None
        trainer.resume(checkpoint)
    assert trainer.run() == "completed"
    return {
        name: p.detach().clone()
        for name, p in adapter.denoiser.named_parameters()
        if p.requires_grad
    }


def test_same_seed_lora_runs_are_bit_identical(folder: Path) -> None:
    torch.manual_seed(1)  # whatever the global RNG holds must not matter
    first = train(lora_config(folder, epochs=1))
    torch.manual_seed(2)
    torch.randn(100)
    second = train(lora_config(folder, epochs=1))
    assert first.keys() == second.keys() and first
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    # ... and the seed does decide: another seed starts from other adapters.
    other = train(lora_config(folder, epochs=1, seed=8))
    assert any(not torch.equal(tensor, other[name]) for name, tensor in first.items())


def test_lora_resume_equals_straight_run(folder: Path, tmp_path: Path) -> None:
    straight = train(lora_config(folder, epochs=4))
    root = tmp_path / "ckpt"
    torch.manual_seed(11)
    train(lora_config(folder, epochs=2), root)
    torch.manual_seed(12)
    resumed = train(lora_config(folder, epochs=4), root, resume=True)
    assert straight.keys() == resumed.keys()
    for name, tensor in straight.items():
        assert torch.equal(tensor, resumed[name]), name


def test_lora_init_comes_from_the_seed_alone(folder: Path) -> None:
    """lora_A ~ N(0, 1/rank^2) from the seed, lora_B = 0; the global RNG is neither read nor
    moved."""

    def adapters(seed: int) -> dict[str, torch.Tensor]:
        adapter = load_model(str(folder), "cpu", "float32")
        state = torch.get_rng_state()
        adapter.enable_lora(2, seed=seed)
        assert torch.equal(torch.get_rng_state(), state)
        torch.randn(50)  # the next one starts from another global state
        return {
            n: p.detach().clone() for n, p in adapter.denoiser.named_parameters() if p.requires_grad
        }

    first, again, other = adapters(5), adapters(5), adapters(6)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[n], again[n]) for n in first)
    a = [t for n, t in first.items() if ".lora_A." in n]
    b = [t for n, t in first.items() if ".lora_B." in n]
    assert a and b and all(not t.any() for t in b)
    assert 0.3 < float(torch.cat([t.flatten() for t in a]).std()) < 0.7  # std 1/rank = 0.5
    assert any(not torch.equal(first[n], other[n]) for n in first if ".lora_A." in n)
