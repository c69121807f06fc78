"""ocr: how well an image renders the text its prompt quotes, read by RapidOCR (Flow-GRPO's OCR task).

Flow-GRPO's text-rendering reward (yifan123/flow_grpo `flow_grpo/ocr.py`, `OcrScorer`; its
`dataset/ocr` prompts each quote one text, e.g. `a neon sign that says "Open 24 Hours"`):

    target     = the first quoted span of the prompt (the text between its first two `"`)
    recognised = every line the OCR engine read (score > 0), concatenated in reading order
    both lose their spaces and are lower-cased
    d          = 0 if target is a substring of recognised, else Levenshtein(recognised, target)
    reward     = 1 - min(d, len(target)) / len(target)                       in [0, 1]

A row's metadata may carry the target as `text` instead (a dataset whose prompts do not quote
it); otherwise a prompt without a quoted span is an error naming it (Flow-GRPO raises an
IndexError there). The engine is RapidOCR on onnxruntime with the PP-OCR models bundled in its
wheel (no download, no torch); Flow-GRPO runs PaddleOCR 2.9 (`lang="en"`, `use_angle_cls=False`,
PP-OCRv4): other weights, so scores compare between studio runs, not with published numbers
(docs/FIDELITY.md). Where Flow-GRPO scores an OCR exception as 0, here it fails the batch: a
broken engine must not look like an unreadable image.

Options (`reward_options.ocr`): `threads` (onnxruntime threads per session, default 1, 0 = all
cores), `text_score` (drop lines read with less confidence, default 0.5, RapidOCR's
default), `det_model_path`, `rec_model_path`, `rec_keys_path` (other local ONNX
models and their character list, default: the bundled ones). Needs the `ocr` extra
(`pip install 'treegrpo-studio[ocr]'`: rapidocr, onnxruntime).

    fn = ocr_factory(torch.device("cpu"), {})
    scores = fn(images, ['a sign that says "Hello World"'], [{}])  # (1,) float32
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from treegrpo import file_roots
from treegrpo.config import ConfigError, _float, _int, _text
from treegrpo.rewards.clip import _check_keys
from treegrpo.rewards.jpeg import to_pil_images
from treegrpo.rewards.signature import Metadata, RewardFn

# A reward that reads each image's metadata (one dict per image, {} where there is none).

TEXT_KEY = "text"
OPTIONS = ("threads", "text_score", "det_model_path", "rec_model_path", "rec_keys_path")
DEFAULT_TEXT_SCORE = 0.5


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions; each costs 1) between a and b."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))  # distances from a[:0] to each b[:j]
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(
                min(
                    previous[j] + 1,  # delete char_a
                    current[j - 1] + 1,  # insert char_b
                    previous[j - 1] + (char_a != char_b),  # substitute (free when equal)
                )
            )
        previous = current
    return previous[-1]


def quoted_text(prompt: str) -> str:
    """The first quoted span of `prompt` (between its first two `"`); ValueError without one."""
    parts = prompt.split('"')
    if len(parts) < 3:
        raise ValueError(
            f"the ocr reward needs the text to render in double quotes in the prompt (or a "
            f"metadata field {TEXT_KEY!r}); none in {prompt!r}"
        )
    return parts[1]


def target_text(prompt: str, metadata: Mapping[str, Any]) -> str:
    """What the image should show: metadata `text` when the row has it, else the quoted span."""
    if metadata.get(TEXT_KEY) is not None:
        return str(metadata[TEXT_KEY])
    return quoted_text(prompt)


def ocr_score(target: str, recognised: str) -> float:
    """Flow-GRPO's score of `recognised` against `target` (module docstring), in [0, 1]."""
    want = target.replace(" ", "").lower()
    got = recognised.replace(" ", "").lower()
    if not want:
        raise ValueError(f"the text to render {target!r} is empty once its spaces are removed")
    distance = 0 if want in got else levenshtein(got, want)
    # Many unrelated characters cost no more than reading nothing (flow_grpo: `dist = len(prompt)`).
    return 1.0 - min(distance, len(want)) / len(want)


def _model_file(field: str, value: Any) -> str | None:
    if value is None:
        return None
    text = _text(field, value, max_chars=2048)
    roots = file_roots.installed()  # a studio worker's file rule, if any
    file = Path(text).expanduser() if roots is None else file_roots.within_roots(field, text, roots)
    if not file.is_file():
        raise ConfigError(field, f"no such file: {file}")
    return str(file)


def ocr_factory(device: torch.device, options: Mapping[str, Any]) -> RewardFn:
    """Registry factory for `ocr`: checks the options and builds the engine (CPU; `device` unused)."""
    _check_keys("ocr", options, OPTIONS)
    threads = _int("reward_options.ocr.threads", options.get("threads", 1), lo=0, hi=256)
    text_score = _float(
        "reward_options.ocr.text_score",
        options.get("text_score", DEFAULT_TEXT_SCORE),
        lo=0,
        hi=1,
    )
    params: dict[str, Any] = {
        "Global.use_cls": False,  # flow_grpo: use_angle_cls=False, ocr(img, cls=False)
        "Global.text_score": text_score,
        "Global.log_level": "error",
        "EngineConfig.onnxruntime.intra_op_num_threads": threads or -1,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    }
    for key, param in (
        ("det_model_path", "Det.model_path"),
        ("rec_model_path", "Rec.model_path"),
        ("rec_keys_path", "Rec.rec_keys_path"),
    ):
        path = _model_file(f"reward_options.ocr.{key}", options.get(key))
        if path is not None:
            params[param] = path
    try:
        from rapidocr import RapidOCR
    except ImportError as exc:
        raise ConfigError(
            "reward",
            "the ocr reward needs RapidOCR: pip install 'treegrpo-studio[ocr]' "
            f"(rapidocr, onnxruntime) ({exc})",
        ) from exc
    try:
        engine = RapidOCR(params=params)
    except Exception as exc:  # bad model files surface here or at the first call
        raise ConfigError("reward_options.ocr", f"RapidOCR could not start: {exc}") from exc

    def read(image: Any) -> str:
        result: Any = engine(image, use_cls=False)  # a RapidOCROutput (detection + recognition)
        texts = result.txts or ()
        scores = result.scores or ()
        return "".join(text for text, score in zip(texts, scores, strict=True) if score > 0)

    def ocr(images: Tensor, prompts: Sequence[str], metadata: Metadata = ()) -> Tensor:
        metadata = metadata or [{} for _ in prompts]  # no dataset rows: every image gets {}
        if not len(prompts) == len(metadata) == images.shape[0]:
            raise ValueError(
                f"got {images.shape[0]} images, {len(prompts)} prompts and {len(metadata)} "
                "metadata rows"
            )
        targets = [target_text(p, m) for p, m in zip(prompts, metadata, strict=True)]
        pil = [image.convert("RGB") for image in to_pil_images(images)]
        scores = [
            ocr_score(target, read(image)) for target, image in zip(targets, pil, strict=True)
        ]
        return torch.tensor(scores, dtype=torch.float32)

    return ocr
