"""Normalising rows into a dataset version: one Parquet file per split, a content hash, a manifest.

    manifest = write_version({"train": rows, "test": more_rows}, folder, source={...})

Each split becomes `<split>.parquet` (columns `prompt`, `metadata` = the row's other columns as
canonical JSON) in row groups of ROW_GROUP rows, so a reader fetches one group for a few rows.
The content hash is SHA-256 over the splits in name order, each row as its prompt and metadata
JSON with their lengths: the same rows give the same hash whatever the source file's format,
name or timestamps (unlike a cache keyed on the path and mtime). `manifest.json` is written
last: the version's commit marker (`MANIFEST`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from treegrpo.datasets.errors import DatasetError
from treegrpo.datasets.sources import Row, metadata_json

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
ROW_GROUP = 1024
MAX_COLUMNS = 256


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _write_split(rows: Iterable[Row], path: Path) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("prompt", pa.string()), ("metadata", pa.string())])
    digest = hashlib.sha256()
    columns: dict[str, None] = {}
    count = 0
    prompts: list[str] = []
    metas: list[str] = []
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:

        def flush() -> None:
            if prompts:
                writer.write_table(
                    pa.table({"prompt": prompts, "metadata": metas}, schema=schema),
                    row_group_size=ROW_GROUP,
                )
                prompts.clear()
                metas.clear()

        for row in rows:
            meta = row.metadata_text or metadata_json(row.metadata, row)
            for key in row.metadata:
                if key not in columns:
                    if len(columns) >= MAX_COLUMNS:
                        raise DatasetError(
                            f"more than {MAX_COLUMNS} metadata columns", row=row.number
                        )
                    columns[key] = None
            for text in (row.prompt, meta):
                data = text.encode("utf-8", "surrogatepass")
                digest.update(len(data).to_bytes(8, "little"))
                digest.update(data)
            prompts.append(row.prompt)
            metas.append(meta)
            count += 1
            if len(prompts) == ROW_GROUP:
                flush()
        flush()
    return {
        "rows": count,
        "sha256": digest.hexdigest(),
        "columns": sorted(columns),
        "bytes": path.stat().st_size,
        "file_sha256": file_sha256(path),
    }


def content_sha256(splits: Mapping[str, Mapping[str, Any]]) -> str:
    """The version's hash from its splits' row hashes and counts, in split-name order."""
    canonical = json.dumps(
        {name: [info["rows"], info["sha256"]] for name, info in sorted(splits.items())},
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_version(
    splits: Mapping[str, Iterable[Row]], folder: Path, *, source: Mapping[str, Any]
) -> dict[str, Any]:
    """Write every split into `folder` (empty or new), then the manifest; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    infos: dict[str, dict[str, Any]] = {}
    for split, rows in sorted(splits.items()):
        infos[split] = _write_split(rows, folder / f"{split}.parquet")
    if not infos or not any(info["rows"] for info in infos.values()):
        raise DatasetError("the dataset holds no prompts")
    columns = sorted({c for info in infos.values() for c in info["columns"]})
    manifest = {
        "format": FORMAT_VERSION,
        "sha256": content_sha256(infos),
        "rows": sum(info["rows"] for info in infos.values()),
        "splits": infos,
        "columns": columns,
        "source": dict(source),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest
