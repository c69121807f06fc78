"""Hub ids resolve in a hand-built local Hugging Face cache, with no network call."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from network_guard import no_network
from tiny_clip import save_tiny_clip
from tiny_diffusers import save_flux, save_sd3

from treegrpo.config import ConfigError, resolve_config
from treegrpo.hub import local_folder, parse_hub_id
from treegrpo.models.flux import FluxAdapter
from treegrpo.models.registry import load_model, load_model_for
from treegrpo.models.sd3 import SD3StyleAdapter
from treegrpo.rewards.registry import load_rewards

MAIN = "a" * 40
OLD = "b" * 40


def cache_snapshot(cache: Path, repo: str, source: Path, commit: str, ref: str | None) -> Path:
    """models--ORG--NAME/snapshots/COMMIT holding a copy of `source`, and refs/REF -> COMMIT."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    shutil.copytree(source, snapshot)
    if ref is not None:
        (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
        (repo_dir / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf") / "hub"
    build = tmp_path_factory.mktemp("build")
    save_sd3(build / "sd3", with_t5=False)
    save_flux(build / "flux")
    save_flux(build / "flux-old", seed=1)
    cache_snapshot(root, "stabilityai/tiny-sd3", build / "sd3", MAIN, "main")
    cache_snapshot(root, "black-forest-labs/tiny-flux", build / "flux", MAIN, "main")
    cache_snapshot(root, "black-forest-labs/tiny-flux", build / "flux-old", OLD, "v0")
    save_tiny_clip(build / "pickscore")
    cache_snapshot(root, "yuvalkirstain/PickScore_v1", build / "pickscore", MAIN, "main")
    return root


@pytest.fixture
def hf_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hub_ids_are_told_from_paths() -> None:
    assert parse_hub_id("stabilityai/stable-diffusion-3.5-medium") == (
        "stabilityai/stable-diffusion-3.5-medium",
        None,
    )
    assert parse_hub_id("org/name@v1.0") == ("org/name", "v1.0")
    for path in ("./org/name", "/models/sd3", "~/sd3", "a/b/c", "org/../x", "digits"):
        assert parse_hub_id(path) is None, path


def test_model_hub_ids_load_from_the_cache_without_network(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with no_network(monkeypatch) as attempts:
        sd3 = load_model("stabilityai/tiny-sd3", "cpu")
        config = resolve_config(
            overrides={
                "model": "black-forest-labs/tiny-flux",
                "device": "cpu",
                "sampling.height": 8,
                "prompts": ["a red cat"],
                "prompts_per_epoch": 1,
            }
        )
        flux = load_model_for(config)
        old = load_model("black-forest-labs/tiny-flux@v0", "cpu", size=(8, 8))
        pinned = load_model(f"black-forest-labs/tiny-flux@{OLD}", "cpu", size=(8, 8))
    assert attempts == []
    assert isinstance(sd3, SD3StyleAdapter) and isinstance(flux, FluxAdapter)
    assert flux.latent_shape == (4, 8, 8)
    # Revisions pick their own snapshot: other weights than main's.
    main_weights = flux.denoiser.state_dict()
    for other in (old, pinned):
        weights = other.denoiser.state_dict()
        assert any(not torch.equal(weights[k], main_weights[k]) for k in main_weights)


def test_reward_hub_ids_load_from_the_cache(hf_cache: Path) -> None:
    rewards = load_rewards(
        {"pickscore": 1.0}, "cpu", {"pickscore": {"path": "yuvalkirstain/PickScore_v1"}}
    )
    scores = rewards["pickscore"](torch.rand(2, 3, 32, 32), ["a cat", "a dog"])
    assert scores.shape == (2,) and scores.isfinite().all()


def test_a_missing_id_names_the_id_the_cache_and_the_fetch_command(hf_cache: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_model("stabilityai/stable-diffusion-3.5-medium", "cpu")
    message = str(caught.value)
    assert message.startswith("model: ")
    assert "'stabilityai/stable-diffusion-3.5-medium'" in message
    assert str(hf_cache) in message
    assert "`hf download stabilityai/stable-diffusion-3.5-medium`" in message
    with pytest.raises(ConfigError, match=r"hf download black-forest-labs/tiny-flux --revision v9"):
        load_model("black-forest-labs/tiny-flux@v9", "cpu")
    with pytest.raises(ConfigError, match=r"reward_options\.pickscore\.path: .*hf download org/x"):
        load_rewards({"pickscore": 1.0}, "cpu", {"pickscore": {"path": "org/x"}})
    # A path that is not a hub id stays a plain missing-folder error.
    with pytest.raises(ConfigError, match="does not exist"):
        local_folder("model", "./models/nothing-here")
