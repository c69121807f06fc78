"""Reading a stored version: memory-mapped Parquet, one row group at a time.

    split = open_split(folder, "train", sha256=job_hash)   # refuses a version that does not match
    len(split), split.rows([5, 9])                         # [(prompt, metadata), ...]
    split.search("cat", offset=0, limit=20)                # preview: (row, prompt, metadata)

The file is memory-mapped and only the row groups holding the asked rows are decoded (1,024 rows
each), so a million prompts cost a reader a few megabytes, however large the split.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from treegrpo.datasets.errors import DatasetError
from treegrpo.datasets.writer import MANIFEST, file_sha256


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise DatasetError(f"no finished dataset version in {folder} (no {MANIFEST})")
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def verify(folder: Path, sha256: str | None) -> dict[str, Any]:
    """The manifest of `folder` once the version is the one asked for: its content hash is
    `sha256` (when given) and every split file's bytes match the hash taken at import."""
    manifest = read_manifest(folder)
    if sha256 is not None and manifest.get("sha256") != sha256:
        raise DatasetError(
            f"the stored dataset is version {str(manifest.get('sha256'))[:12]}, "
            f"the job was submitted with {sha256[:12]}: refusing to train on other prompts"
        )
    for split, info in manifest["splits"].items():
        path = folder / f"{split}.parquet"
        if not path.is_file() or file_sha256(path) != info["file_sha256"]:
            raise DatasetError(
                f"split {split!r} of dataset {manifest['sha256'][:12]} is missing or altered "
                "(its file does not match the hash taken at import)"
            )
    return manifest


class SplitTable:
    """One split of a version, memory-mapped."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.file = pq.ParquetFile(path, memory_map=True)
        meta = self.file.metadata
        counts = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.starts = [0]
        for count in counts:
            self.starts.append(self.starts[-1] + count)

    def __len__(self) -> int:
        return self.starts[-1]

    def rows(self, indices: Sequence[int]) -> list[tuple[str, dict[str, Any]]]:
        """(prompt, metadata) of each 0-based row index, in the order asked. Each row group
        holding some of them is decoded once, and only the asked rows become Python objects."""
        wanted: dict[int, list[int]] = {}
        for index in indices:
            if not 0 <= index < len(self):
                raise IndexError(f"row {index} of a split of {len(self)} rows")
            wanted.setdefault(bisect.bisect_right(self.starts, index) - 1, []).append(index)
        found: dict[int, tuple[str, dict[str, Any]]] = {}
        for group, members in wanted.items():
            table = self.file.read_row_group(group, columns=["prompt", "metadata"])
            prompts, metas = table.column("prompt"), table.column("metadata")
            for index in members:
                at = index - self.starts[group]  # scalar reads: no pyarrow.compute import
                found[index] = (prompts[at].as_py(), json.loads(metas[at].as_py()))
        return [found[index] for index in indices]

    def scan(self) -> Iterator[tuple[int, str, str]]:
        """(0-based row, prompt, metadata JSON) of every row, a row group at a time."""
        for group in range(len(self.starts) - 1):
            table = self.file.read_row_group(group, columns=["prompt", "metadata"])
            start = self.starts[group]
            prompts = table.column("prompt").to_pylist()
            metas = table.column("metadata").to_pylist()
            for at, (prompt, meta) in enumerate(zip(prompts, metas, strict=True)):
                yield start + at, prompt, meta

    def search(
        self, query: str = "", offset: int = 0, limit: int = 20
    ) -> tuple[list[dict[str, Any]], int]:
        """Rows whose prompt holds `query` (case-insensitive; all rows for ""), the `limit`
        after the first `offset` matches, and how many matched in all."""
        needle = query.casefold()
        found: list[dict[str, Any]] = []
        total = 0
        if not needle:
            stop = min(len(self), offset + limit)
            picked = self.rows(range(offset, stop)) if offset < stop else []
            for row, (prompt, meta) in zip(range(offset, stop), picked, strict=True):
                found.append({"row": row + 1, "prompt": prompt, "metadata": meta})
            return found, len(self)
        for row, prompt, text in self.scan():
            if needle in prompt.casefold():
                if offset <= total < offset + limit:
                    found.append({"row": row + 1, "prompt": prompt, "metadata": json.loads(text)})
                total += 1
        return found, total


def open_split(folder: Path, split: str, sha256: str | None = None) -> SplitTable:
    """A split of the version in `folder`, checked (verify) when `sha256` is given."""
    manifest = verify(folder, sha256) if sha256 is not None else read_manifest(folder)
    if split not in manifest["splits"]:
        raise DatasetError(
            f"dataset {manifest['sha256'][:12]} has no split {split!r} "
            f"(splits: {', '.join(sorted(manifest['splits']))})"
        )
    return SplitTable(folder / f"{split}.parquet")
