"""Prompt datasets: imported once, stored as content-hashed Parquet, read memory-mapped.

A dataset version is a folder named by the SHA-256 of its content (`datasets/<sha256>/` in the
artifact store): one Parquet file per split (`train.parquet`, `test.parquet`, ...) with two
columns, `prompt` and `metadata` (the row's other columns as a JSON object), and `manifest.json`
written last, so a folder without a manifest is an import that never finished and is never read.

    manifest = import_dataset(Path("prompts.jsonl"), work_dir)     # sources.py + writer.py
    source = open_split(folder, "train")                           # table.py: memory-mapped
    rows = source.rows([3, 17])                                     # [(prompt, metadata), ...]

Torch-free: the API imports it (pyarrow is the only heavy import, loaded on first use).
"""

from treegrpo.datasets.errors import DatasetError
from treegrpo.datasets.ref import DatasetRef

__all__ = ["DatasetError", "DatasetRef"]
