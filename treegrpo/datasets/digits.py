"""The digits family's prompt dataset, with metadata: each row's `digit`.

    rows = digit_rows(50_000, seed=0)          # prompts of treegrpo/prompts.py's templates
    write_jsonl(Path("digits.jsonl"), rows)    # {"prompt": ..., "digit": 7} a line

The shipped version (treegrpo/datasets/data/digits/: `train_metadata.jsonl` with the training
templates, `test_metadata.jsonl` with the held-out one, Flow-GRPO's folder layout) imports with
`treegrpo dataset import treegrpo/datasets/data/digits --name digits`; `digit_judge` then scores
each image against its row's digit rather than parsing the prompt.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from treegrpo.prompts import DIGIT_TEMPLATES, DIGIT_WORDS, HELDOUT_DIGIT_TEMPLATES

SHIPPED = Path(__file__).parent / "data" / "digits"


def digit_rows(
    count: int, seed: int = 0, templates: tuple[str, ...] = DIGIT_TEMPLATES
) -> Iterator[dict[str, Any]]:
    """`count` rows: a seeded digit and template each, numbered so every prompt is its own."""
    rng = random.Random(seed)
    for index in range(count):
        digit = rng.randrange(10)
        template = templates[rng.randrange(len(templates))]
        prompt = template.format(word=DIGIT_WORDS[digit], digit=digit)
        yield {
            "prompt": f"{prompt}, sample {index}" if count > 10 * len(templates) else prompt,
            "digit": digit,
            "template": templates.index(template),
        }


def template_rows(templates: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every digit in every template, once."""
    return [
        {"prompt": t.format(word=word, digit=digit), "digit": digit, "template": i}
        for digit, word in enumerate(DIGIT_WORDS)
        for i, t in enumerate(templates)
    ]


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True) + "\n")
    return path


def write_shipped(folder: Path = SHIPPED) -> None:
    """(Re)write the shipped folder from the templates."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train_metadata.jsonl", template_rows(DIGIT_TEMPLATES))
    write_jsonl(folder / "test_metadata.jsonl", template_rows(HELDOUT_DIGIT_TEMPLATES))
