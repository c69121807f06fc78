"""Named prompt sets. Torch-free: the config validates prompt-set names against this table."""

from __future__ import annotations

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Several phrasings per class so that the text encoder, not a lookup table, carries the meaning.
# The base model learns all of them; RL trains on DIGIT_TEMPLATES and galleries use the held-out
# phrasing, so a gain on it is a gain in the model, not on the training prompts alone.
DIGIT_TEMPLATES = (
    "a handwritten digit {word}",
    "the number {digit}",
    "handwritten {digit}",
)
HELDOUT_DIGIT_TEMPLATES = ("a picture of the digit {word}",)


def digit_prompts(templates: tuple[str, ...] = DIGIT_TEMPLATES) -> tuple[str, ...]:
    return tuple(
        template.format(word=word, digit=digit)
        for digit, word in enumerate(DIGIT_WORDS)
        for template in templates
    )


# A small, varied set for real text-to-image models (the paper trains on HPDv2-style prompts;
# point `prompts` at your own list for real runs).
GENERAL_PROMPTS = (
    "a red fox sitting in fresh snow, golden hour",
    "a watercolor painting of a lighthouse on a cliff",
    "a bowl of ramen with a soft-boiled egg, studio photo",
    "an astronaut riding a horse on the moon",
    "a cozy reading nook with a window and rain outside",
    "a cyberpunk street market at night, neon signs",
    "a portrait of an old fisherman, dramatic lighting",
    "a minimalist poster of a mountain range at dawn",
    "a glass teapot with blooming tea, macro photo",
    "a medieval castle on an island, oil painting",
    "a corgi wearing sunglasses on a beach",
    "a field of sunflowers under a stormy sky",
    "a steampunk airship above a Victorian city",
    "an isometric illustration of a tiny island village",
    "a bouquet of wildflowers in a ceramic vase",
    "a snowy owl perched on a branch, detailed feathers",
)

# Never trained on by the presets that train on GENERAL_PROMPTS: evaluation measures the model.
GENERAL_HELDOUT_PROMPTS = (
    "a lighthouse keeper's cat asleep on a windowsill",
    "a paper boat floating down a rainy city gutter",
    "a jazz trio playing in a dim basement club",
    "a desert canyon at sunrise, long shadows",
    "a hummingbird drinking from a red flower, high-speed photo",
    "a children's book illustration of a dragon baking bread",
    "a futuristic train crossing a glass bridge",
    "a still life of lemons and a copper kettle, oil painting",
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
    "tiny-heldout": ("a light gray square", "a small white dot"),
    "digits": digit_prompts(),
    "digits-heldout": digit_prompts(HELDOUT_DIGIT_TEMPLATES),
    "general": GENERAL_PROMPTS,
    "general-heldout": GENERAL_HELDOUT_PROMPTS,
}


def digit_of_prompt(prompt: str) -> int | None:
    """The digit a prompt asks for ("seven" or "7"), or None when it names none or several."""
    found = set()
    for token in prompt.lower().replace(",", " ").replace(".", " ").split():
        if token.isdigit() and len(token) == 1:
            found.add(int(token))
        elif token in DIGIT_WORDS:
            found.add(DIGIT_WORDS.index(token))
    return found.pop() if len(found) == 1 else None


def resolve_prompts(value: str | tuple[str, ...]) -> tuple[str, ...]:
    """A prompt-set name or an explicit tuple -> the prompts."""
    if isinstance(value, str):
        return PROMPT_SETS[value]
    return value
