"""The `ocr` reward: Flow-GRPO's score on hand-made strings, and the real RapidOCR engine reading
text rendered with PIL (its models ship inside the rapidocr wheel: nothing is downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from treegrpo.config import ConfigError
from treegrpo.rewards import names, ocr
from treegrpo.rewards.registry import load_rewards


def test_levenshtein_on_hand_counted_edits() -> None:
    assert ocr.levenshtein("kitten", "sitting") == 3  # k->s, e->i, +g
    assert ocr.levenshtein("", "abc") == 3
    assert ocr.levenshtein("abc", "") == 3
    assert ocr.levenshtein("flaw", "lawn") == 2  # -f, +n
    assert ocr.levenshtein("same", "same") == 0


def test_score_follows_flow_grpo() -> None:
    # Contained, after dropping spaces and case: 1.
    assert ocr.ocr_score("Hello World", "SIGN: hello   world!") == 1.0
    # "helloworld" (10) read as "heloworld": one deletion -> 1 - 1/10.
    assert ocr.ocr_score("Hello World", "Helo World") == pytest.approx(0.9)
    # "hello" against "helloworld": 5 missing characters -> 1 - 5/10.
    assert ocr.ocr_score("Hello World", "Hello") == pytest.approx(0.5)
    # Many unrelated characters: the distance is capped at the target's length -> 0, never < 0.
    assert ocr.ocr_score("Hi", "completely unrelated text") == 0.0
    assert ocr.ocr_score("Hi", "") == 0.0
    with pytest.raises(ValueError, match="empty"):
        ocr.ocr_score("  ", "anything")


def test_target_is_the_first_quoted_span_or_the_metadata_text() -> None:
    assert ocr.quoted_text('a sign "OPEN" next to "CLOSED"') == "OPEN"
    assert ocr.target_text('a sign "OPEN"', {}) == "OPEN"
    assert ocr.target_text("a shop sign", {"text": "SALE"}) == "SALE"
    with pytest.raises(ValueError, match="a shop sign"):
        ocr.target_text("a shop sign", {})
    assert names.required_metadata("ocr") == ()


def _rendered(text: str, size: tuple[int, int] = (320, 128)) -> torch.Tensor:
    """(3, H, W) in [0, 1]: black text on white, Pillow's own scalable font."""
    image = Image.new("RGB", size, "white")
    font = ImageFont.load_default(size=40)
    ImageDraw.Draw(image).text((16, 40), text, fill="black", font=font)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def reward() -> ocr.MetadataRewardFn:
    return ocr.ocr_factory(torch.device("cpu"), {"threads": 1})


def test_the_real_engine_reads_rendered_text(reward: ocr.MetadataRewardFn) -> None:
    images = torch.stack(
        [_rendered("Hello World"), _rendered("Hello"), torch.ones(3, 128, 320)]
    )  # (3, 3, 128, 320)
    prompts = ['a poster that says "Hello World"'] * 3
    scores = reward(images, prompts, [{}, {}, {}])
    assert scores.dtype == torch.float32
    # Read whole; read "hello" of "helloworld" (1 - 5/10); a blank page reads nothing (0).
    assert scores.tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_text_score_reaches_the_engine() -> None:
    # Every line is read with confidence < 1: a threshold of 1 drops them all, so nothing is read.
    strict = ocr.ocr_factory(torch.device("cpu"), {"text_score": 1})
    assert strict(_rendered("Hello World")[None], ['"Hello World"'], [{}]).tolist() == [0.0]


def test_metadata_text_and_the_registry_entry(reward: ocr.MetadataRewardFn) -> None:
    image = _rendered("SALE")[None]  # (1, 3, 128, 320)
    assert reward(image, ["a shop window"], [{"text": "sale"}]).tolist() == [1.0]
    # Registered in the two-argument registry: the quoted span still works without metadata.
    fn = load_rewards({"ocr": 1.0})["ocr"]
    assert fn(image, ['a window with "Sale" on it']).tolist() == [1.0]
    with pytest.raises(ValueError, match="a shop window"):
        fn(image, ["a shop window"])


def test_bad_options_name_their_field(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"reward_options\.ocr\.colour"):
        ocr.ocr_factory(torch.device("cpu"), {"colour": 1})
    with pytest.raises(ConfigError, match=r"reward_options\.ocr\.rec_model_path"):
        ocr.ocr_factory(torch.device("cpu"), {"rec_model_path": str(tmp_path / "none.onnx")})
    with pytest.raises(ConfigError, match=r"reward_options\.ocr\.text_score"):
        ocr.ocr_factory(torch.device("cpu"), {"text_score": 2})


def test_model_files_outside_a_workers_roots_are_refused(tmp_path) -> None:
    from treegrpo import file_roots

    outside = tmp_path / "rec.onnx"
    outside.write_bytes(b"onnx")
    file_roots.install([tmp_path / "models"])
    try:
        with pytest.raises(ConfigError, match=r"reward_options\.ocr\.rec_model_path"):
            ocr.ocr_factory(torch.device("cpu"), {"rec_model_path": str(outside)})
    finally:
        file_roots.install(None)
