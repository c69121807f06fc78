"""The `geneval` reward end to end on tiny random-init models the test saves: a transformers
Mask2Former (Swin backbone) and a CLIP. The detector's real forward runs; where a test needs
known objects, its answer is replaced by hand-made class and mask logits of the same shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_clip import save_tiny_clip
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

from treegrpo.config import ConfigError
from treegrpo.rewards import geneval, names
from treegrpo.rewards.geneval_rules import CLASS_NAMES, COLORS, Detection
from treegrpo.rewards.registry import load_rewards

QUERIES = 6
DOG, CAT = CLASS_NAMES.index("dog"), CLASS_NAMES.index("cat")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("geneval")
    backbone = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=32,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=backbone,
        num_labels=80,
        num_queries=QUERIES,
        hidden_dim=32,
        mask_feature_size=32,
        feature_size=32,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
        encoder_feedforward_dim=32,
        dim_feedforward=32,
    )
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(root / "m2f")
    save_tiny_clip(root / "clip")
    return {"path": str(root / "m2f"), "clip_path": str(root / "clip"), "input_size": 64}


SCENE = [
    {
        "tag": "position",
        "include": [
            {"class": "dog", "count": 1},
            {"class": "cat", "count": 1, "position": ["right of", 0]},
        ],
    },
    {
        "tag": "position",
        "include": [
            {"class": "dog", "count": 1},
            {"class": "cat", "count": 1, "position": ["left of", 0]},
        ],
    },
    {
        "tag": "counting",
        "include": [{"class": "cat", "count": 2}],
        "exclude": [{"class": "cat", "count": 3}],
    },
    {"tag": "two_object", "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1}]},
]


@pytest.fixture
def dog_left_cat_right(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The detector, run for real, then answering: query 0 a dog in the left quarter, query 1 a
    cat in the right quarter, the others no-object. Returns the real answer's shapes."""
    real = Mask2FormerForUniversalSegmentation.forward
    seen: list[tuple[int, ...]] = []

    def forward(self: Any, pixel_values: torch.Tensor, **kwargs: Any) -> Any:
        out = real(self, pixel_values=pixel_values, **kwargs)
        seen.append(tuple(out.masks_queries_logits.shape))
        b, q, h, w = out.masks_queries_logits.shape
        classes = torch.full((b, q, 81), -10.0)
        classes[:, :, 80] = 10.0  # no-object
        classes[:, 0, DOG], classes[:, 0, 80] = 10.0, -10.0
        classes[:, 1, CAT], classes[:, 1, 80] = 10.0, -10.0
        masks = torch.full((b, q, h, w), -10.0)
        masks[:, 0, :, : w // 4] = 10.0
        masks[:, 1, :, -(w // 4) :] = 10.0
        out.class_queries_logits, out.masks_queries_logits = classes, masks
        return out

    monkeypatch.setattr(Mask2FormerForUniversalSegmentation, "forward", forward)
    return seen


def test_known_objects_score_as_the_rules_say(
    folders: dict[str, Any], dog_left_cat_right: list[tuple[int, ...]]
) -> None:
    images = torch.rand(4, 3, 64, 96)  # (B, 3, H, W): resized to 64 x 96, padded to 64 x 96
    prompts = ["a cat right of a dog", "a cat left of a dog", "two cats", "a dog and a cat"]
    partial = geneval.geneval_factory(torch.device("cpu"), {**folders, "batch_size": 2})
    # 1: dog, cat, position -> 1. 2: the same with a failed position -> (1 + 1 + 0 + 1) / 4.
    # 3: one cat of two -> 1 - 1/2 (counting: the 0.9 threshold; the detections score ~1).
    # 4: both there -> 1.
    assert partial(images, prompts, SCENE).tolist() == pytest.approx(
        [1.0, 0.75, 0.5, 1.0], abs=1e-4
    )
    # The real forward saw the padded input: mask logits at a quarter of 64 x 96.
    assert dog_left_cat_right[0] == (2, QUERIES, 16, 24)
    strict = geneval.geneval_factory(torch.device("cpu"), {**folders, "mode": "strict"})
    assert strict(images, prompts, SCENE).tolist() == [1.0, 0.0, 0.0, 1.0]
    official = geneval.geneval_factory(torch.device("cpu"), {**folders, "mode": "official"})
    assert official(images, prompts, SCENE).tolist() == [1.0, 0.0, 0.0, 1.0]


def test_colour_runs_the_clip_crops(
    folders: dict[str, Any], dog_left_cat_right: list[tuple[int, ...]]
) -> None:
    fn = geneval.geneval_factory(torch.device("cpu"), folders)
    colour = {"tag": "color_attr", "include": [{"class": "dog", "count": 1, "color": "red"}]}
    value = float(fn(torch.rand(1, 3, 64, 64), ["a red dog"], [colour])[0])
    # count credit 1, colour credit 1 or 0 (whatever the random CLIP says): mean 1 or 1/2.
    assert value in (pytest.approx(1.0), pytest.approx(0.5))
    classifier = geneval.ColourClassifier(
        geneval.load_clip_encoder("g", torch.device("cpu"), {"path": folders["clip_path"]})
    )
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[10:20, 5:30] = True
    detection = Detection(box=(5, 10, 30, 20), score=1.0, mask=mask)
    assert classifier(torch.rand(3, 64, 64), [detection, detection], "dog")[0] in COLORS


def test_the_real_random_detector_runs(folders: dict[str, Any]) -> None:
    fn = load_rewards({"geneval": 1.0}, options={"geneval": folders})["geneval"]
    # Today's registry gives no metadata: refused, naming the prompt and what is missing.
    with pytest.raises(ValueError, match=r"'a dog'.*tag"):
        fn(torch.rand(1, 3, 32, 32), ["a dog"])
    scores = geneval.geneval_factory(torch.device("cpu"), folders)(
        torch.rand(2, 3, 48, 48), ["a dog", "a cat"], SCENE[2:]
    )
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    assert names.required_metadata("geneval") == ("tag", "include")


def test_bad_options_name_their_field(folders: dict[str, Any], tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match=r"reward_options\.geneval\.clip_path.*missing"):
        geneval.geneval_factory(cpu, {"path": folders["path"]})
    with pytest.raises(ConfigError, match=r"reward_options\.geneval\.path.*'clip'"):
        geneval.geneval_factory(
            cpu, {"path": folders["clip_path"], "clip_path": folders["clip_path"]}
        )
    with pytest.raises(ConfigError, match=r"reward_options\.geneval\.clip_path"):
        geneval.geneval_factory(cpu, {"path": folders["path"], "clip_path": folders["path"]})
    with pytest.raises(ConfigError, match=r"reward_options\.geneval\.mode"):
        geneval.geneval_factory(cpu, {**folders, "mode": "lenient"})
    with pytest.raises(ConfigError, match=r"reward_options\.geneval\.path.*no such folder"):
        geneval.geneval_factory(cpu, {**folders, "path": str(tmp_path / "none")})
