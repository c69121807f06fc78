"""One import: a file, a dataset folder or a cached hub id -> a finished version folder.

    manifest = import_source("prompts.jsonl", work, split="train")     # a file: one split
    manifest = import_source("/data/flow_grpo/dataset/geneval", work)  # a folder: its splits
    manifest = import_source("org/prompts@main", work, hub_cache=...)  # the local HF cache

`work` is a new, empty folder; the caller publishes it under the version's hash (and removes it
on failure), so nothing half-imported is ever listed. `progress(done, total)` hears how many
bytes of the source files have been read (treegrpo/datasets/progress.py), throttled, with
increasing counts and a last call at the total. Paths are the caller's to check against
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
from treegrpo.datasets.progress import ImportProgress, ProgressFn, total_bytes
from treegrpo.datasets.ref import SPLIT
from treegrpo.datasets.sources import PROMPT_COLUMN, Row, format_of, read_rows
from treegrpo.datasets.writer import file_sha256, write_version


def _chained(
    files: list[Path], prompt_column: str, tracker: ImportProgress | None
) -> Iterator[Row]:
    """The rows of a split's files in order, numbered within each file (errors name the file)."""
    on_read = tracker.advance if tracker else None
    return itertools.chain.from_iterable(
        read_rows(path, None, prompt_column, on_read) for path in files
    )


def _write_splits(
    files: dict[str, list[Path]],
    work: Path,
    *,
    prompt_column: str,
    source: dict[str, Any],
    progress: ProgressFn | None,
) -> dict[str, Any]:
    """Every split of a folder into one version. write_version reads the splits in name order
    (as `files` is sorted), so the bytes read only grow."""
    tracker = None
    if progress is not None:
        tracker = ImportProgress(
            total_bytes(p for paths in files.values() for p in paths), progress
        )
    splits = {split: _chained(paths, prompt_column, tracker) for split, paths in files.items()}
    manifest = write_version(splits, work, source=source)
    if tracker is not None:
        tracker.finish()
    return manifest


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
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """One file as one split."""
    if not SPLIT.match(split):
        raise DatasetError(f"not a split name: {split!r}")
    fmt = format_of(Path(name or path.name))
    source = {"kind": "file", "name": name or path.name, "format": fmt}
    tracker = ImportProgress(total_bytes([path]), progress) if progress is not None else None
    rows = read_rows(path, fmt, prompt_column, tracker.advance if tracker else None)
    manifest = write_version({split: rows}, work, source=source)
    if tracker is not None:
        tracker.finish()
    return manifest


def import_folder(
    path: Path,
    work: Path,
    *,
    prompt_column: str = PROMPT_COLUMN,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """A folder of split files (Flow-GRPO's dataset/<task>, a Hugging Face layout)."""
    files = split_files(path)
    source = _files_source("folder", files, path)
    return _write_splits(files, work, prompt_column=prompt_column, source=source, progress=progress)


def import_hub(
    value: str,
    work: Path,
    *,
    cache_dir: Path | None = None,
    prompt_column: str = PROMPT_COLUMN,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """A dataset of the local Hugging Face cache, `ORG/NAME[@REVISION]`, pinned to its commit."""
    folder, repo, commit = cached_snapshot(value, cache_dir)
    files = split_files(folder)
    source = {**_files_source("hf", files, folder), "repo_id": repo, "commit": commit}
    return _write_splits(files, work, prompt_column=prompt_column, source=source, progress=progress)
