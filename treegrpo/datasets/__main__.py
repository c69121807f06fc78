"""One import in a process of its own: `python -m treegrpo.datasets '<spec JSON>'`.

The studio's API runs each import so (backend/datasets.py): parsing a million rows allocates
memory that a long-lived server would keep; a child process gives all of it back when it exits.
The spec: {"kind": "file" | "folder" | "hub", "source": path or id, "out": folder, "split",
"prompt_column", "name" (the uploaded file's name), "cache_dir", "progress": bool}. With
"progress", prints {"progress": [bytes read, total bytes]} lines as the source is read
(treegrpo/datasets/progress.py: a few a second at most, the last at the total). Its last line is
{"manifest": {...}} (exit 0) or {"error": {"reason", "row", "source"}} (exit 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from treegrpo.datasets.errors import DatasetError
from treegrpo.datasets.progress import ProgressFn


def print_progress(done: int, total: int) -> None:
    print(json.dumps({"progress": [done, total]}), flush=True)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from treegrpo.datasets.importer import import_file, import_folder, import_hub

    out = Path(spec["out"])
    column = spec.get("prompt_column", "prompt")
    progress: ProgressFn | None = print_progress if spec.get("progress") else None
    if spec["kind"] == "file":
        return import_file(
            Path(spec["source"]),
            out,
            split=spec.get("split", "train"),
            prompt_column=column,
            name=spec.get("name"),
            progress=progress,
        )
    if spec["kind"] == "folder":
        return import_folder(Path(spec["source"]), out, prompt_column=column, progress=progress)
    cache = spec.get("cache_dir")
    return import_hub(
        spec["source"],
        out,
        cache_dir=Path(cache) if cache else None,
        prompt_column=column,
        progress=progress,
    )


def main(argv: list[str]) -> int:
    try:
        manifest = run(json.loads(argv[0]))
    except DatasetError as exc:
        error = {"reason": exc.reason, "row": exc.row, "source": exc.source}
        print(json.dumps({"error": error}))
        return 2
    print(json.dumps({"manifest": manifest}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
