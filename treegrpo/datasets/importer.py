"""One import: a file, a dataset folder or a cached hub id -> a finished version folder.

    manifest = import_source("prompts.jsonl", work, split="train")     # a file: one split
    manifest = import_source("/data/flow_grpo/dataset/geneval", work)  # a folder: its splits
    manifest = import_source("org/prompts@main", work, hub_cache=...)  # the local HF cache

`work` is a new, empty folder; the caller publishes it under the version's hash (and removes it
on failure), so nothing half-imported is ever listed. Paths are the caller's to check against
the file rule (treegrpo/file_roots.py) before they reach here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from treegrpo.datasets.errors import DatasetError
from treegrpo.datasets.folders import split_files
from treegrpo.datasets.hf_cache import cached_snapshot
from treegrpo.datasets.ref import SPLIT
from treegrpo.datasets.sources import PROMPT_COLUMN, Row, format_of, read_rows
from treegrpo.datasets.writer import file_sha256, write_version


def _chained(files: list[Path], prompt_column: str) -> Iterator[Row]:
    """The rows of a split's files in order, numbered within each file (errors name the file)."""
    return itertools.chain.from_iterable(read_rows(path, None, prompt_column) for path in files)


def _files_source(kind: str, files: dict[str, list[Path]], base: Path) -> dict[str, Any]:
    return {
        "kind": kind,
        "files": {
            split: [{"name": str(p.relative_to(base)), "sha256": file_sha256(p)} for p in paths]
            for split, paths in files.items()
        },
    }


def import_file(
    path: Path,
    work: Path,
    *,
    split: str = "train",
    prompt_column: str = PROMPT_COLUMN,
    name: str | None = None,
) -> dict[str, Any]:
    """One file as one split."""
    if not SPLIT.match(split):
        raise DatasetError(f"not a split name: {split!r}")
    fmt = format_of(Path(name or path.name))
    source = {"kind": "file", "name": name or path.name, "format": fmt}
    return write_version({split: read_rows(path, fmt, prompt_column)}, work, source=source)


def import_folder(path: Path, work: Path, *, prompt_column: str = PROMPT_COLUMN) -> dict[str, Any]:
    """A folder of split files (Flow-GRPO's dataset/<task>, a Hugging Face layout)."""
    files = split_files(path)
    splits = {split: _chained(paths, prompt_column) for split, paths in files.items()}
    return write_version(splits, work, source=_files_source("folder", files, path))


def import_hub(
    value: str, work: Path, *, cache_dir: Path | None = None, prompt_column: str = PROMPT_COLUMN
) -> dict[str, Any]:
    """A dataset of the local Hugging Face cache, `ORG/NAME[@REVISION]`, pinned to its commit."""
    folder, repo, commit = cached_snapshot(value, cache_dir)
    files = split_files(folder)
    splits = {split: _chained(paths, prompt_column) for split, paths in files.items()}
    source = {**_files_source("hf", files, folder), "repo_id": repo, "commit": commit}
    return write_version(splits, work, source=source)
