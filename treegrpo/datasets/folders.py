"""Which file of a dataset folder holds which split: Flow-GRPO's and the Hugging Face layouts.

    <split>.txt | <split>.jsonl | <split>.csv | <split>.parquet        one file per split
    <split>_metadata.jsonl                                             Flow-GRPO's GenEval
    [data/]<split>-*.parquet, data/<split>/*.parquet, ...              Hugging Face datasets

Flow-GRPO's loaders (yifan123/flow_grpo `scripts/train_sd3.py`: TextPromptDataset reads
`{split}.txt`, GenevalPromptDataset `{split}_metadata.jsonl`) are the model for the first two.
A split with both a metadata file and a plain one takes the metadata file.
"""

from __future__ import annotations

import re
from pathlib import Path

from treegrpo.datasets.errors import DatasetError
from treegrpo.datasets.ref import SPLIT
from treegrpo.datasets.sources import FORMATS

_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_.]+?)(?:-\d{5}-of-\d{5}|-[0-9a-f]{8,}|-\d+)?$")
MAX_FILES = 1024


def split_files(folder: Path) -> dict[str, list[Path]]:
    """split -> its files in name order; DatasetError when the folder holds no split."""
    if not folder.is_dir():
        raise DatasetError("not a folder", source=str(folder))
    found: dict[str, dict[str, list[Path]]] = {}  # split -> kind -> files
    candidates = [*folder.iterdir()]
    data = folder / "data"
    if data.is_dir():
        candidates += [*data.iterdir()]
        candidates += [p for sub in data.iterdir() if sub.is_dir() for p in sub.iterdir()]
    for path in sorted(candidates):
        if not path.is_file() or path.name.startswith("."):
            continue
        suffix = path.suffix.lower().lstrip(".")
        if suffix not in FORMATS:
            continue
        stem = path.stem
        kind = "plain"
        if stem.endswith("_metadata") and suffix == "jsonl":
            stem, kind = stem.removesuffix("_metadata"), "metadata"
        match = _SHARD.match(stem)
        split = match.group("split") if match else stem
        if path.parent.parent == data:  # data/<split>/<shard>.parquet
            split = path.parent.name
        if not SPLIT.match(split):
            continue
        found.setdefault(split, {}).setdefault(kind, []).append(path)
    if not found:
        raise DatasetError(
            "no split files (train.txt, test_metadata.jsonl, data/train-*.parquet, ...)",
            source=folder.name,
        )
    out = {}
    for split, kinds in sorted(found.items()):
        files = kinds.get("metadata") or kinds["plain"]
        formats = {p.suffix.lower() for p in files}
        if len(formats) > 1:
            raise DatasetError(
                f"split {split!r} has files of several formats: "
                + ", ".join(p.name for p in files),
                source=folder.name,
            )
        out[split] = files
    if sum(len(files) for files in out.values()) > MAX_FILES:
        raise DatasetError(f"more than {MAX_FILES} files", source=folder.name)
    return out
