"""The reward names the config accepts, and the metadata each needs. Torch-free (the API checks
a job against both at submit); the names must match `registry.REWARDS`."""

from __future__ import annotations

from collections.abc import Iterable

REWARD_NAMES: tuple[str, ...] = (
    "brightness",
    "contrast",
    "digit_judge",
    "boldness",
    "jpeg_compressibility",
    "jpeg_incompressibility",
    "clipscore",
    "pickscore",
    "aesthetic",
    "hps",
    "remote",
    "ocr",
    "vlm_judge",
    "imagereward",
    "geneval",
)

# Required metadata: the keys a reward reads from every prompt's dataset row (registry.py's
# docstring). A reward listed here is refused at submit, with a 422 naming the key, when the
# run's prompts come from a dataset without that column, or are an inline list or a named set
# (which carry no metadata). Add a line when a reward starts reading a key, e.g.
#     "geneval": ("tag", "include"),
REQUIRED_METADATA: dict[str, tuple[str, ...]] = {"geneval": ("tag", "include")}


def required_metadata(name: str) -> tuple[str, ...]:
    """The metadata keys reward `name` reads from each prompt's row (() for none)."""
    return REQUIRED_METADATA.get(name, ())


def missing_metadata(rewards: Iterable[str], columns: Iterable[str]) -> list[tuple[str, str]]:
    """(reward, key) for each required key that `columns` (a dataset's metadata columns) lacks."""
    have = set(columns)
    return [(name, key) for name in rewards for key in required_metadata(name) if key not in have]
