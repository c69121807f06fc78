"""GenEval's rules on hand-made detections, with the scores worked out by hand, and the
detector post-processing and colour crops on hand-made tensors."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from treegrpo.rewards import geneval
from treegrpo.rewards.geneval_rules import (
    Detection,
    check_metadata,
    kept,
    official_correct,
    partial_credit,
    relative_position,
)


def box(x1: float, y1: float, x2: float, y2: float, score: float = 0.95) -> Detection:
    return Detection(box=(x1, y1, x2, y2), score=score)


def never(found: Sequence[Detection], name: str) -> list[str]:
    raise AssertionError("no colour check was due")


def painted(*colours: str) -> Any:
    """A colour classifier that answers `colours` in order (and counts its calls)."""

    def fn(found: Sequence[Detection], name: str) -> list[str]:
        fn.calls += 1  # type: ignore[attr-defined]
        return list(colours[: len(found)])

    fn.calls = 0  # type: ignore[attr-defined]
    return fn


def test_relative_position_by_hand() -> None:
    # Centres (5, 5) and (35, 5): offset (-30, 0); shrink 0.1 x (10 + 10) = 2 -> (-28, 0);
    # / |offset| 30 -> dx = -0.933 < -0.5: left of.
    assert relative_position(box(0, 0, 10, 10), box(30, 0, 40, 10)) == {"left of"}
    assert relative_position(box(30, 0, 40, 10), box(0, 0, 10, 10)) == {"right of"}
    # Centres (5, 5), (25, 25): offset (-20, -20) -> (-18, -18) / 28.28 = -0.636 each: both.
    assert relative_position(box(0, 0, 10, 10), box(20, 20, 30, 30)) == {"left of", "above"}
    # Offset (0, 30) with heights 40 + 40: shrink 8 -> dy = 22 / 30 = 0.733: below.
    assert relative_position(box(0, 30, 10, 70), box(0, 0, 10, 40)) == {"below"}
    # Centres 4 apart, sizes 20 + 20: the shrink (4) eats the offset: no relation.
    assert relative_position(box(4, 0, 24, 20), box(0, 0, 20, 20)) == set()
    # Offset (-10, -4), sizes 10 + 10 each way: (-8, -2) / 10.77 = (-0.743, -0.186): left only.
    assert relative_position(box(0, 0, 10, 10), box(10, 4, 20, 14)) == {"left of"}


def test_kept_thresholds_order_and_cap() -> None:
    candidates = {
        "cat": [box(0, 0, 1, 1, s) for s in (0.31, 0.95, 0.3, 0.5)],
        "dog": [box(0, 0, 1, 1, 0.2)],
        "cup": [box(0, 0, 1, 1, 0.99)] * 20,
    }
    out = kept(candidates, "two_object")
    assert [d.score for d in out["cat"]] == [0.95, 0.5, 0.31]  # > 0.3, best first
    assert "dog" not in out
    assert len(out["cup"]) == 16  # at most 16 per class
    assert [d.score for d in kept(candidates, "counting")["cat"]] == [0.95]  # > 0.9 for counting


def test_counting_partial_credit_and_strictness() -> None:
    meta = {
        "tag": "counting",
        "include": [{"class": "cat", "count": 3}],
        "exclude": [{"class": "cat", "count": 4}],
    }
    two = {"cat": [box(0, 0, 1, 1)] * 2}
    assert partial_credit(two, meta, never) == (False, pytest.approx(1 - 1 / 3))
    assert official_correct(two, meta, never) is False
    three = {"cat": [box(0, 0, 1, 1)] * 3}
    assert partial_credit(three, meta, never) == (True, 1.0)
    assert official_correct(three, meta, never) is True
    # 7 of 3: 1 - 4/3 = -1/3 (the server's credit goes negative); strict fails; official:
    # >= 3 included but the exclude clause (>= 4) fires.
    seven = {"cat": [box(0, 0, 1, 1)] * 7}
    assert partial_credit(seven, meta, never) == (False, pytest.approx(-1 / 3))
    assert official_correct(seven, meta, never) is False
    # Without the exclude clause the official rule is ">= count": more is still correct.
    assert official_correct(seven, {"tag": "counting", "include": meta["include"]}, never) is True


def test_colour_credit() -> None:
    meta = {"tag": "color_attr", "include": [{"class": "car", "count": 2, "color": "red"}]}
    cars = {"car": [box(0, 0, 1, 1)] * 2}
    # Credits: count 1, colour 1 - |2 - 1| / 2 = 0.5 -> mean 0.75.
    assert partial_credit(cars, meta, painted("red", "blue")) == (False, pytest.approx(0.75))
    assert partial_credit(cars, meta, painted("red", "red")) == (True, 1.0)
    assert official_correct(cars, meta, painted("red", "blue")) is False
    # A count miss: count credit 1 - 1/2, the colour check scores 0 without being run.
    one = {"car": [box(0, 0, 1, 1)]}
    assert partial_credit(one, meta, never) == (False, pytest.approx(0.25))
    # Official: 3 cars, colour read on the 2 most confident only.
    three = {"car": [box(0, 0, 1, 1)] * 3}
    classifier = painted("red", "red", "blue")
    assert official_correct(three, meta, classifier) is True
    assert classifier.calls == 1  # type: ignore[attr-defined]


def test_position_credit_and_the_servers_quirk() -> None:
    meta = {
        "tag": "position",
        "include": [
            {"class": "dog", "count": 1},
            {"class": "cat", "count": 1, "position": ["left of", 0]},
        ],
    }
    dog = box(50, 0, 60, 10)
    left = {"dog": [dog], "cat": [box(0, 0, 10, 10)]}
    right = {"dog": [dog], "cat": [box(90, 0, 100, 10)]}
    # Holds: credits dog 1, cat 1, position 1 -> 1.
    assert partial_credit(left, meta, never) == (True, 1.0)
    assert official_correct(left, meta, never) is True
    # Fails: credits 1, 1, 0 and then 1 (appended after the loop anyway) -> 3/4.
    assert partial_credit(right, meta, never) == (False, pytest.approx(0.75))
    assert official_correct(right, meta, never) is False
    # No cat: credits 1, 0 (count), 0 (dependent check) -> 1/3.
    assert partial_credit({"dog": [dog]}, meta, never) == (False, pytest.approx(1 / 3))
    # Two dogs: dog credit 0 and no target group; the cat's position check scores 0 -> 1/3.
    # Official: >= 1 dog, the position is read against the most confident dog.
    two_dogs = {"dog": [dog, box(0, 50, 10, 60)], "cat": [box(0, 0, 10, 10)]}
    assert partial_credit(two_dogs, meta, never) == (False, pytest.approx(1 / 3))
    assert official_correct(two_dogs, meta, never) is True


def test_check_metadata_says_what_is_wrong() -> None:
    good = {
        "tag": "position",
        "include": [
            {"class": "dog", "count": 1},
            {"class": "cat", "count": 1, "position": ["above", 0]},
        ],
    }
    check_metadata(good)
    cases = [
        ({"include": good["include"]}, "tag"),
        ({"tag": "colors", "include": []}, "include"),
        ({"tag": "colors", "include": [{"class": "unicorn", "count": 1}]}, "unicorn"),
        ({"tag": "colors", "include": [{"class": "cat", "count": 0}]}, "count"),
        ({"tag": "colors", "include": [{"class": "cat", "count": 1, "color": "teal"}]}, "teal"),
        (
            {
                "tag": "position",
                "include": [{"class": "cat", "count": 1, "position": ["above", 0]}],
            },
            "earlier",
        ),
    ]
    for meta, words in cases:
        with pytest.raises(ValueError, match=words):
            check_metadata(meta)


def test_instances_follow_mmdetection_postprocessing() -> None:
    # 3 queries, 2 classes (+ no-object). Query 0: class 1 with p = e^4 / (e^4 + 2) = 0.9647;
    # query 1: no-object; query 2: class 0 with the same p, its mask only in the padding rows.
    class_logits = torch.tensor([[0.0, 4.0, 0.0], [0.0, 0.0, 9.0], [4.0, 0.0, 0.0]])
    masks = torch.full((3, 8, 8), -5.0)  # logits over the padded input, already at its size
    masks[0, 1:3, 2:6] = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    masks[2, 5:, :] = 6.0  # rows 4..7 are padding: the image is the top (4, 8)
    labels, scores, boxes, binary = geneval.instances(
        class_logits, masks, (8, 8), (4, 8), (4, 8), 0.3
    )
    p = torch.tensor(4.0).exp() / (torch.tensor(4.0).exp() + 2)
    inside = torch.tensor([1.0, 2.0, 3.0, 4.0]).sigmoid().mean()  # mean sigmoid inside the mask
    order = scores.argsort(descending=True)
    assert labels[order].tolist() == [1, 0]
    assert scores[order][0] == pytest.approx(float(p * inside), abs=1e-5)
    assert scores[order][1] == pytest.approx(0.0, abs=1e-5)  # empty mask inside the image
    assert boxes[order][0].tolist() == [2.0, 1.0, 6.0, 3.0]  # x1, y1, x2 + 1, y2 + 1
    assert boxes[order][1].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert binary.shape == (2, 4, 8)
    # A stricter threshold on the class score drops both.
    assert len(geneval.instances(class_logits, masks, (8, 8), (4, 8), (4, 8), 0.97)[0]) == 0


class RgbEncoder:
    """A stand-in CLIP: an image's embedding is its mean RGB, a text's the RGB of its colour."""

    image_size = 8
    RGB: ClassVar[dict[str, tuple[int, int, int]]] = {
        "red": (1, 0, 0),
        "green": (0, 1, 0),
        "blue": (0, 0, 1),
    }

    def text_embeds(self, texts: Sequence[str]) -> Tensor:
        rows = []
        for text in texts:
            colour = next((c for c in self.RGB if f" {c}" in text), None)
            rows.append(
                torch.tensor(self.RGB[colour], dtype=torch.float32)
                if colour
                else torch.tensor([0.1, 0.1, 0.1])
            )
        return F.normalize(torch.stack(rows), dim=-1)

    def image_embeds(self, images: Tensor) -> Tensor:
        return F.normalize(images.mean(dim=(2, 3)) - 0.5, dim=-1)


def test_colour_crops_are_the_mask_on_grey_cut_to_the_box() -> None:
    image = torch.zeros(3, 16, 16)
    image[2] = 1.0  # all blue ...
    image[:, 4:8, 4:8] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)  # ... but a red square
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:8, 4:8] = True
    classify = geneval.ColourClassifier(RgbEncoder())  # type: ignore[arg-type]
    # The box is larger than the mask and mostly blue; the grey background hides the blue.
    with_mask = Detection(box=(0, 0, 12, 12), score=1.0, mask=mask)
    assert classify(image, [with_mask], "car") == ["red"]
    assert classify(image, [Detection(box=(0, 0, 12, 12), score=1.0)], "car") == ["blue"]
    assert classify.weights("car").shape == (10, 3)


def test_detector_normalisation_from_the_folder(tmp_path) -> None:
    assert geneval._stats(tmp_path) == (geneval.IMAGENET_MEAN, geneval.IMAGENET_STD)
    # mmdet's config writes them on the 0-255 scale: 123.675 / 255 = 0.485, 58.395 / 255 = 0.229.
    config = {"image_mean": [123.675, 116.28, 103.53], "image_std": [58.395, 57.12, 57.375]}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    mean, std = geneval._stats(tmp_path)
    assert mean == pytest.approx(geneval.IMAGENET_MEAN, abs=1e-6)
    assert std == pytest.approx(geneval.IMAGENET_STD, abs=1e-3)


def test_detector_input_rescales_as_mmcv() -> None:
    # 512 x 512 -> 800 x 800; 480 x 640 -> shortest 800 (x 1.667): 800 x 1067 (1066.67 rounded up);
    # 200 x 1000 -> 800 / 200 = 4 would make 4000 wide: capped by 1333 / 1000 -> 267 x 1333.
    for shape, expected in (
        ((512, 512), (800, 800)),
        ((480, 640), (800, 1067)),
        ((200, 1000), (267, 1333)),
    ):
        image, size = geneval.detector_input(torch.rand(3, *shape), 800, 1333)
        assert size == expected and tuple(image.shape[-2:]) == expected
