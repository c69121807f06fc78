"""How a config names a dataset: `prompts: {dataset: NAME_OR_ID, split: train}`.

`sha256` pins the version: the studio fills it in at submit (the dataset's content hash, frozen
with the job), and the worker refuses a stored dataset whose content does not match it. A config
written by hand for `treegrpo train` may give it, or a folder path as `dataset`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from treegrpo.errors import ConfigError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
SPLIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KEYS = ("dataset", "split", "sha256")


@dataclass(frozen=True)
class DatasetRef:
    dataset: str  # a dataset's name or id in the studio, or a dataset folder
    split: str = "train"
    sha256: str | None = None  # the content hash of the version (filled in at submit)

    @classmethod
    def parse(cls, field: str, value: Mapping[str, Any], default_split: str) -> DatasetRef:
        unknown = [key for key in value if key not in KEYS]
        if unknown:
            raise ConfigError(f"{field}.{unknown[0]}", f"unknown key; known: {', '.join(KEYS)}")
        name = value.get("dataset")
        if not isinstance(name, str | int) or isinstance(name, bool) or not str(name).strip():
            raise ConfigError(f"{field}.dataset", "name a dataset (its name or id)")
        split = value.get("split", default_split)
        if not isinstance(split, str) or not SPLIT.match(split):
            raise ConfigError(
                f"{field}.split", f"a split name (letters, digits, _.-), got {split!r}"
            )
        sha = value.get("sha256")
        if sha is not None and (not isinstance(sha, str) or not SHA256.match(sha)):
            raise ConfigError(f"{field}.sha256", "64 lower-case hex digits")
        text = str(name).strip()
        if len(text) > 1024:
            raise ConfigError(f"{field}.dataset", "at most 1024 characters")
        return cls(text, split, sha)

    def describe(self) -> str:
        pinned = f"@{self.sha256[:12]}" if self.sha256 else ""
        return f"dataset {self.dataset}{pinned} split {self.split}"
