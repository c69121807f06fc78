"""CLIP-family rewards (clipscore, pickscore, hps, aesthetic) on a tiny random CLIP saved offline.

The fixture builds a ~40k-parameter CLIPModel and a CLIPTokenizer over a hand-written vocabulary,
saves both into a tmp folder, and every reward loads that folder through the registry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tiny_clip import save_tiny_clip

from treegrpo.config import ConfigError
from treegrpo.rewards.registry import RewardFn, load_rewards

PROMPTS = ["a red cat", "a blue dog", "a red cat", "green trees"]
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-clip")
    save_tiny_clip(folder)
    return folder


@pytest.fixture(scope="module")
def clip_model(clip_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    return model, AutoTokenizer.from_pretrained(clip_dir, local_files_only=True)


def _reward(name: str, **options: Any) -> RewardFn:
    return load_rewards({name: 1.0}, "cpu", {name: options})[name]


def _images(channels: int, size: int = 32, batch: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, size, size, generator=generator)


def _by_hand(model: Any, tokenizer: Any, images: torch.Tensor) -> Any:
    """CLIPModel.forward on 32x32 RGB images normalised by hand: embeddings and logits."""
    tokens = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=(images - CLIP_MEAN) / CLIP_STD,
        )


@pytest.mark.parametrize("name", ["clipscore", "pickscore", "hps"])
@pytest.mark.parametrize("channels", [1, 3])
def test_text_rewards_score_grey_and_rgb_batches(clip_dir: Path, name: str, channels: int) -> None:
    fn = _reward(name, path=str(clip_dir))
    images = _images(channels, size=16)  # upsampled to the model's 32x32
    scores = fn(images, PROMPTS)
    assert scores.shape == (4,) and scores.dtype == torch.float32 and scores.device.type == "cpu"
    assert torch.isfinite(scores).all()
    assert torch.equal(scores, fn(images, PROMPTS))  # deterministic
    torch.testing.assert_close(scores[:1], fn(images[:1], PROMPTS[:1]))  # independent of the batch


def test_scores_match_clip_forward_by_hand(clip_dir: Path, clip_model: tuple[Any, Any]) -> None:
    model, tokenizer = clip_model
    images = _images(3)  # already 32x32: no resize, so only the normalisation is ours
    out = _by_hand(model, tokenizer, images)
    cos = (out.image_embeds * out.text_embeds).sum(-1)  # (4,) unit vectors -> cosine
    assert (cos > 0).any() and (cos < 0).any()  # this seed exercises the max(cos, 0) of CLIPScore

    hps = _reward("hps", path=str(clip_dir))(images, PROMPTS)
    torch.testing.assert_close(hps, cos)
    pick = _reward("pickscore", path=str(clip_dir))(images, PROMPTS)
    torch.testing.assert_close(pick, out.logits_per_image.diagonal())
    torch.testing.assert_close(pick, model.logit_scale.exp() * cos)
    clipscore = _reward("clipscore", path=str(clip_dir))(images, PROMPTS)
    torch.testing.assert_close(clipscore, 2.5 * cos.clamp(min=0))  # Hessel et al. eq. 1, w = 2.5
    weighted = _reward("clipscore", path=str(clip_dir), weight=1.0)(images, PROMPTS)
    torch.testing.assert_close(weighted, cos.clamp(min=0))


def test_grey_scores_as_its_rgb_repeat_and_batches_agree(clip_dir: Path) -> None:
    grey = _images(1, size=20)
    small = _reward("pickscore", path=str(clip_dir), batch_size=3)
    large = _reward("pickscore", path=str(clip_dir), batch_size=32)
    torch.testing.assert_close(small(grey, PROMPTS), large(grey.repeat(1, 3, 1, 1), PROMPTS))


def test_non_square_images_are_centre_cropped(clip_dir: Path) -> None:
    fn = _reward("hps", path=str(clip_dir))
    wide = _images(3, size=32).repeat(1, 1, 1, 2)  # (4, 3, 32, 64)
    centre = wide[:, :, :, 16:48]  # shortest side already 32: the crop is the middle 32 columns
    torch.testing.assert_close(fn(wide, PROMPTS), fn(centre, PROMPTS))


def test_mean_and_std_come_from_the_preprocessor_config(
    tmp_path: Path, clip_dir: Path, clip_model: tuple[Any, Any]
) -> None:
    folder = tmp_path / "clip-half"
    folder.mkdir()
    for file in clip_dir.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]})
    )
    model, tokenizer = clip_model
    images = _images(3)
    tokens = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**tokens, pixel_values=(images - 0.5) / 0.5)
    cos = (out.image_embeds * out.text_embeds).sum(-1)
    torch.testing.assert_close(_reward("hps", path=str(folder))(images, PROMPTS), cos)


def test_processor_path_gives_the_tokenizer(tmp_path: Path, clip_dir: Path) -> None:
    model_only = tmp_path / "model"
    model_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        (model_only / name).write_bytes((clip_dir / name).read_bytes())
    with pytest.raises(ConfigError) as info:
        _reward("pickscore", path=str(model_only))
    assert info.value.field == "reward_options.pickscore.path" and "tokenizer" in info.value.reason
    fn = _reward("pickscore", path=str(model_only), processor_path=str(clip_dir))
    images = _images(3)
    torch.testing.assert_close(
        fn(images, PROMPTS), _reward("pickscore", path=str(clip_dir))(images, PROMPTS)
    )


def _save_head(path: Path, state: dict[str, torch.Tensor]) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)


def _laion_like_head(in_dim: int = 16) -> dict[str, torch.Tensor]:
    """LAION v2's layout (layers.0, .2, .4, .6, .7; dropout between), at tiny widths."""
    generator = torch.Generator().manual_seed(1)
    dims = [(24, in_dim), (12, 24), (8, 12), (4, 8), (1, 4)]
    state = {}
    for index, (out_dim, in_dim_) in zip((0, 2, 4, 6, 7), dims, strict=True):
        state[f"layers.{index}.weight"] = torch.randn(out_dim, in_dim_, generator=generator)
        state[f"layers.{index}.bias"] = torch.randn(out_dim, generator=generator)
    return state


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_aesthetic_is_the_head_on_the_normalised_image_embedding(
    tmp_path: Path, clip_dir: Path, clip_model: tuple[Any, Any], suffix: str
) -> None:
    state = _laion_like_head()
    head = tmp_path / f"head{suffix}"
    _save_head(head, state)
    fn = _reward("aesthetic", path=str(clip_dir), head=str(head))
    images = _images(3)
    scores = fn(images, PROMPTS)
    assert scores.shape == (4,) and scores.dtype == torch.float32

    model, _ = clip_model
    with torch.no_grad():
        embeds = model.get_image_features(pixel_values=(images - CLIP_MEAN) / CLIP_STD)
    x = F.normalize(embeds.pooler_output, dim=-1)  # (4, 16)
    for index in (0, 2, 4, 6, 7):  # LAION v2: linear layers, no activation between them
        x = x @ state[f"layers.{index}.weight"].T + state[f"layers.{index}.bias"]
    torch.testing.assert_close(scores, x[:, 0])
    torch.testing.assert_close(
        fn(images[:, :1], PROMPTS), fn(images[:, :1].repeat(1, 3, 1, 1), PROMPTS)
    )

    relu = _reward("aesthetic", path=str(clip_dir), head=str(head), activation="relu")(
        images, PROMPTS
    )
    assert not torch.allclose(relu, scores)


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ({"0.weight": torch.zeros(8, 12), "1.weight": torch.zeros(1, 8)}, "projection_dim is 16"),
        ({"0.weight": torch.zeros(8, 16), "1.weight": torch.zeros(2, 8)}, "2 outputs"),
        ({"0.weight": torch.zeros(8, 16), "1.weight": torch.zeros(1, 4)}, "previous layer"),
        ({"mlp.weight": torch.zeros(1, 16)}, "unexpected key"),
        ({"0.weight": torch.zeros(1, 16), "0.bias": torch.zeros(2)}, "bias"),
    ],
)
def test_aesthetic_refuses_a_bad_head(
    tmp_path: Path, clip_dir: Path, state: dict[str, torch.Tensor], reason: str
) -> None:
    head = tmp_path / "head.safetensors"
    _save_head(head, state)
    with pytest.raises(ConfigError, match=reason) as info:
        _reward("aesthetic", path=str(clip_dir), head=str(head))
    assert info.value.field == "reward_options.aesthetic.head"


def test_aesthetic_head_option_is_required(clip_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing") as info:
        _reward("aesthetic", path=str(clip_dir))
    assert info.value.field == "reward_options.aesthetic.head"
    with pytest.raises(ConfigError, match="no such file"):
        _reward("aesthetic", path=str(clip_dir), head=str(tmp_path / "none.pt"))


@pytest.mark.parametrize("name", ["clipscore", "pickscore", "aesthetic", "hps"])
def test_missing_or_invalid_path_names_the_option(tmp_path: Path, name: str) -> None:
    head = tmp_path / "head.safetensors"
    _save_head(head, {"0.weight": torch.zeros(1, 16)})
    extra = {"head": str(head)} if name == "aesthetic" else {}
    other = tmp_path / "not-clip"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "clip"}))
    cases = {
        "missing": None,
        "no such folder": tmp_path / "absent",
        "no config.json": tmp_path,
        "model_type 'bert'": other,
        "could not load a CLIPModel": no_weights,
    }
    for reason, path in cases.items():
        options = extra if path is None else {**extra, "path": str(path)}
        with pytest.raises(ConfigError, match=reason) as info:
            load_rewards({name: 1.0}, "cpu", {name: options})
        assert info.value.field == f"reward_options.{name}.path"
        assert str(info.value).startswith(f"reward_options.{name}.path: ")


def test_bad_options_and_batches(clip_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _reward("clipscore", path=str(clip_dir), weigth=2.0)
    assert info.value.field == "reward_options.clipscore.weigth"
    with pytest.raises(ConfigError) as info:
        _reward("hps", path=str(clip_dir), batch_size=0)
    assert info.value.field == "reward_options.hps.batch_size"
    with pytest.raises(ConfigError) as info:
        _reward("pickscore", path=str(clip_dir), dtype="float8")
    assert info.value.field == "reward_options.pickscore.dtype"
    fn = _reward("hps", path=str(clip_dir))
    with pytest.raises(ValueError, match="4 images but 3 prompts"):
        fn(_images(3), PROMPTS[:3])
    with pytest.raises(ValueError, match="1 or 3"):
        fn(torch.zeros(4, 4, 32, 32), PROMPTS)


def test_incomplete_checkpoint_is_refused(tmp_path: Path, clip_dir: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    folder.mkdir()
    for file in clip_dir.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    state = load_file(str(folder / "model.safetensors"))
    del state["visual_projection.weight"]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ConfigError, match="incomplete CLIP checkpoint") as info:
        _reward("hps", path=str(folder))
    assert info.value.field == "reward_options.hps.path"
