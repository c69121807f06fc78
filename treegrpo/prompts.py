"""Named prompt sets. Torch-free: the config validates prompt-set names against this table."""

from __future__ import annotations

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Several phrasings per class so that the text encoder, not a lookup table, carries the meaning.
DIGIT_TEMPLATES = (
    "a handwritten digit {word}",
    "the number {digit}",
    "a picture of the digit {word}",
    "handwritten {digit}",
)


def digit_prompts() -> tuple[str, ...]:
    return tuple(
        template.format(word=word, digit=digit)
        for digit, word in enumerate(DIGIT_WORDS)
        for template in DIGIT_TEMPLATES
    )


PROMPT_SETS: dict[str, tuple[str, ...]] = {
    "tiny": (
        "a bright square",
        "a dark square",
        "a gray square",
        "a checkerboard",
        "a white circle",
        "a black circle",
    ),
    "digits": digit_prompts(),
}


def resolve_prompts(value: str | tuple[str, ...]) -> tuple[str, ...]:
    """A prompt-set name or an explicit tuple -> the prompts."""
    if isinstance(value, str):
        return PROMPT_SETS[value]
    return value
