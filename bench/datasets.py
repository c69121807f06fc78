"""Prompt datasets at scale: a 1,000,000-prompt Parquet file imported through the API, and the
resident memory it costs the API and a worker.

Starts the API (uvicorn, one process, SQLite under a temporary folder), uploads a generated
Parquet file of `--rows` prompts with two metadata columns through POST /api/v1/datasets/upload
(streamed from the file), previews and searches it, then runs a worker-like reader in a fresh
process: it opens the stored version the way a train job does (hash check, memory-mapped
split) and draws `--epochs` epochs of `--per-epoch` prompts. The baseline is what the prompts
cost as a plain Python list (the form inline prompts and named sets take), read in the same way
in its own process (both measured after their imports). Prints a table; writes bench/results/datasets.json and, with --docs, its
section of docs/BENCHMARKS.md.

    .venv/bin/python bench/datasets.py                       # 1,000,000 rows
    .venv/bin/python bench/datasets.py --rows 20000 --out /tmp/x.json     # a smoke run

Resident memory is the process's RSS (psutil); "API during import" is the peak sampled every
20 ms while the request runs. Times are wall-clock on this machine, loopback HTTP.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MB = 1024 * 1024

READER = r"""
import json, random, sys, time, psutil
from pathlib import Path
import pyarrow.parquet
from treegrpo.datasets.prompt_rows import InlinePrompts, draw
from treegrpo.datasets.table import open_split, read_manifest
process = psutil.Process()
before = process.memory_info().rss
started = time.perf_counter()
mode, folder, split, epochs, per_epoch = sys.argv[1:6]
if mode == "dataset":
    sha = read_manifest(Path(folder))["sha256"]
    source = open_split(Path(folder), split, sha)        # verifies the hash, memory-maps
else:
    table = pyarrow.parquet.read_table(folder, columns=["prompt"])
    source = InlinePrompts(table.column("prompt").to_pylist())
    del table
opened = time.perf_counter() - started
drawn = []
for epoch in range(int(epochs)):
    rng = random.Random(epoch)
    drawn.append(source.rows(draw(len(source), int(per_epoch), rng)))
print(json.dumps({"rows": len(source), "open_s": opened, "draw_s": time.perf_counter() - started - opened,
                  "rss_mb": (process.memory_info().rss - before) / 2**20}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_parquet(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tags = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]
    writer = None
    for start in range(0, rows, 100_000):
        stop = min(rows, start + 100_000)
        table = pa.table(
            {
                "prompt": [
                    f"a photo of item {i}, studio light, detailed" for i in range(start, stop)
                ],
                "tag": [tags[i % len(tags)] for i in range(start, stop)],
                "count": [i % 5 + 1 for i in range(start, stop)],
            }
        )
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


class Api:
    def __init__(self, data: Path) -> None:
        from backend import crud, migrate
        from backend.db import session_scope

        url = f"sqlite:///{data / 'treegrpo.db'}"
        migrate.upgrade(url)
        with session_scope(url) as session:
            _, self.key = crud.create_api_key(session, name="bench", role="admin")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TREEGRPO_")}
        env.update(
            {
                "TREEGRPO_DATABASE_URL": url,
                "TREEGRPO_DATA_DIR": str(data),
                "TREEGRPO_ARTIFACT_DIR": str(data / "artifacts"),
            }
        )
        command = [
            sys.executable, "-m", "uvicorn", "backend.api:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/api/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the API did not start")

    def rss(self) -> float:
        return psutil.Process(self.process.pid).memory_info().rss / MB

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


def peak_while(api: Api, work: Any) -> tuple[Any, float, float]:
    """(work's result, seconds, peak API RSS in MB while it ran)."""
    peak = api.rss()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, api.rss())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    try:
        result = work()
    finally:
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    return result, seconds, peak


def reader(mode: str, folder: Path, split: str, epochs: int, per_epoch: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", READER, mode, str(folder), split, str(epochs), str(per_epoch)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(rows: int, epochs: int, per_epoch: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-datasets-") as tmp:
        folder = Path(tmp)
        source = folder / "prompts.parquet"
        started = time.perf_counter()
        make_parquet(source, rows)
        made = time.perf_counter() - started
        api = Api(folder / "data")
        headers = {"X-API-Key": api.key}
        try:
            idle = api.rss()

            def upload() -> dict[str, Any]:
                with source.open("rb") as handle:
                    response = httpx.post(
                        f"{api.base}/api/v1/datasets/upload",
                        params={"name": "bench", "filename": source.name},
                        content=handle,
                        headers=headers,
                        timeout=1800,
                    )
                response.raise_for_status()
                answer: dict[str, Any] = response.json()
                return answer

            dataset, import_s, import_peak = peak_while(api, upload)
            after = api.rss()

            def preview() -> Any:
                return httpx.get(
                    f"{api.base}/api/v1/datasets/{dataset['id']}/rows",
                    params={"q": "item 999999,", "limit": 5}, timeout=600,
                ).json()  # fmt: skip

            found, search_s, search_peak = peak_while(api, preview)
            first = httpx.get(
                f"{api.base}/api/v1/datasets/{dataset['id']}/rows", params={"offset": rows // 2}
            )
            page_s = first.elapsed.total_seconds()
            stored = folder / "data" / "artifacts" / "datasets" / dataset["sha256"]
            worker = reader("dataset", stored, "train", epochs, per_epoch)
            baseline = reader("list", source, "train", epochs, per_epoch)
        finally:
            api.stop()
    return {
        "rows": rows,
        "source_mb": source.stat().st_size / MB if source.exists() else None,
        "generate_s": made,
        "import_s": import_s,
        "import_rows_per_s": rows / import_s,
        "stored_mb": dataset["bytes"] / MB,
        "api_rss_idle_mb": idle,
        "api_rss_peak_import_mb": import_peak,
        "api_rss_after_mb": after,
        "search_s": search_s,
        "search_matches": found["count"],
        "api_rss_peak_search_mb": search_peak,
        "page_s": page_s,
        "worker": worker,
        "list_baseline": baseline,
        "epochs": epochs,
        "per_epoch": per_epoch,
    }


def table(r: dict[str, Any]) -> str:
    w, b = r["worker"], r["list_baseline"]
    lines = [
        f"| Rows imported through POST /api/v1/datasets/upload | {r['rows']:,} |",
        f"| Import time (upload, validate, hash, write Parquet, store) | {r['import_s']:.1f} s "
        f"({r['import_rows_per_s']:,.0f} rows/s) |",
        f"| Stored (zstd Parquet) | {r['stored_mb']:.1f} MB |",
        f"| API RSS idle / peak during import / after | {r['api_rss_idle_mb']:.0f} / "
        f"{r['api_rss_peak_import_mb']:.0f} / {r['api_rss_after_mb']:.0f} MB |",
        f"| Search of all rows (preview ?q=) | {r['search_s']:.2f} s, API peak "
        f"{r['api_rss_peak_search_mb']:.0f} MB |",
        f"| One preview page in the middle | {r['page_s'] * 1000:.0f} ms |",
        f"| Worker: open (hash check + memory map) | {w['open_s']:.2f} s |",
        f"| Worker: {r['epochs']} epochs x {r['per_epoch']} prompts drawn | {w['draw_s']:.2f} s |",
        f"| Worker RSS for the dataset / as a Python list | {w['rss_mb']:.0f} MB / "
        f"{b['rss_mb']:.0f} MB (x{b['rss_mb'] / max(w['rss_mb'], 1):.0f} less) |",
    ]
    return "\n".join(["| Measure | Value |", "|---|---|", *lines])


def write_docs(path: Path, result: dict[str, Any]) -> None:
    section = (
        "## Prompt datasets: 1,000,000 prompts through the API (bench/datasets.py)\n\n"
        f"Measured {result['when']} on {result['machine']}, `.venv/bin/python bench/datasets.py`."
        " The worker figures are a fresh process that opens the stored version as a train job "
        "does and draws the epochs' prompts; the list baseline holds the same prompts as a "
        "Python list (what inline prompts are). The import runs in a child process of the API "
        "(`python -m treegrpo.datasets`), whose memory goes back to the system when it exits: "
        "the API figures are the server process alone. Times are upper bounds: the machine was "
        "shared with other test runs.\n\n" + table(result) + "\n"
    )
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(r"## Prompt datasets: .*?(?=\n## |\Z)", re.S)
    text = (
        pattern.sub(section.rstrip("\n") + "\n", text)
        if pattern.search(text)
        else (text.rstrip("\n") + "\n\n" + section)
    )
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--per-epoch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "datasets.json")
    parser.add_argument("--docs", type=Path, help="write the section of docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    result = run(args.rows, args.epochs, args.per_epoch)
    result["when"] = datetime.now(UTC).strftime("%Y-%m-%d")
    result["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.docs:
        write_docs(args.docs, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
