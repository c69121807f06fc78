"""API load: latency percentiles and throughput of GET /jobs, GET /jobs/{id} and POST /jobs.

Starts the API (uvicorn, one process, the API alone unless --with-ui) against a fresh
PostgreSQL database on 127.0.0.1:5432 (made, migrated and seeded here, dropped at the end), then,
for each route in turn, runs `--clients` concurrent closed-loop clients (each sends its next
request as soon as the last answer arrived, over its own keep-alive connection) for `--seconds`
after `--warmup` seconds, and records every request's latency. Prints a table; writes the figures
to bench/results/api_load.json and, with --docs, its section of docs/BENCHMARKS.md (replacing an
earlier one, keeping the rest).

    .venv/bin/python bench/api_load.py                          # 50 clients, 10 s per route
    .venv/bin/python bench/api_load.py --docs docs/BENCHMARKS.md
    .venv/bin/python bench/api_load.py --clients 4 --seconds 1 --warmup 0.2 --jobs 20 --out x.json

What is measured: wall time from sending a request to having read the whole answer, on loopback,
with the load generator in its own process (asyncio, a minimal keep-alive HTTP/1.1 client: see
`Connection`). GET /jobs asks for the default page
(50 jobs, newest first, with their latest rewards, without their configs); GET /jobs/{id} picks
a random seeded job; POST /jobs creates a train job from a preset (config validation, insert,
commit, and a message to the filesystem queue). A failed request (non-2xx or transport error)
counts as an error and is left out of the percentiles. The load generator shares the machine's
CPUs with the server, so figures on a small machine are a lower bound of what the API can do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DOCS_TITLE = "## API load: bench/api_load.py"


@dataclass
class RouteResult:
    route: str
    clients: int
    seconds: float
    requests: int
    errors: int
    throughput: float  # successful requests per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_ms: float  # server CPU time per request (all its processes), warm-up included


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted `values` (q in 0..100)."""
    if not values:
        return float("nan")
    rank = max(1, min(len(values), int(-(-q * len(values) // 100))))
    return values[rank - 1]


def summarise(
    route: str,
    clients: int,
    seconds: float,
    latencies: list[float],
    errors: int,
    server_cpu_ms: float = float("nan"),
) -> RouteResult:
    ordered = sorted(latencies)
    return RouteResult(
        route=route,
        clients=clients,
        seconds=round(seconds, 3),
        requests=len(ordered) + errors,
        errors=errors,
        throughput=round(len(ordered) / seconds, 1) if seconds > 0 else 0.0,
        p50_ms=round(1000 * percentile(ordered, 50), 2),
        p90_ms=round(1000 * percentile(ordered, 90), 2),
        p99_ms=round(1000 * percentile(ordered, 99), 2),
        max_ms=round(1000 * ordered[-1], 2) if ordered else float("nan"),
        server_cpu_ms=round(server_cpu_ms, 3),
    )


# ---------------------------------------------------------------------------------------------
# the server under test


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_database(kind: str, folder: Path) -> tuple[str, str | None]:
    """(URL, PostgreSQL database name or None) of a fresh, migrated database."""
    from backend import migrate

    if kind == "sqlite":
        url = f"sqlite:///{folder / 'bench.db'}"
        migrate.upgrade(url)
        return url, None
    import secrets

    import psycopg

    name = f"treegrpo_bench_{secrets.token_hex(4)}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    migrate.upgrade(url)
    return url, name


def drop_database(url: str, name: str | None) -> None:
    if name is None:
        return
    import psycopg

    from backend.db import engine_for

    engine_for(url).dispose()
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def seed(url: str, jobs: int, preset: str) -> tuple[str, list[int]]:
    """`jobs` train jobs with the preset's resolved config and a few reward points each, in
    mixed states; returns (API key, job ids)."""
    from backend import crud
    from backend.db import session_scope
    from treegrpo.config import resolve_config

    config = resolve_config(preset).to_dict()
    ids = []
    with session_scope(url) as session:
        _, key = crud.create_api_key(session, name="bench", role="admin")
        for index in range(jobs):
            job, _ = crud.create_job(
                session,
                kind="train",
                name=f"bench job {index}",
                config=config,
                algorithm=config["algorithm"],
                preset=preset,
                progress_total=config["epochs"],
            )
            ids.append(job.id)
            if index % 3:
                claimed = crud.claim_job(session, job_id=job.id, worker="bench")
                assert claimed is not None
                for step in range(5):
                    crud.upsert_metrics(
                        session,
                        job_id=job.id,
                        step=step,
                        values={"reward_mean": 0.1 * step, "loss": 1.0 / (1 + step)},
                    )
                if index % 3 == 2:
                    crud.finish_job(
                        session, job_id=job.id, attempt=claimed.attempt, status="succeeded"
                    )
    if url.startswith("postgresql"):
        # A live database has planner statistics; a freshly filled one gets them here.
        from sqlalchemy import text

        from backend.db import engine_for

        with engine_for(url).connect() as connection:
            connection.execute(text("COMMIT"))
            connection.execute(text("ANALYZE"))
    return key, ids


class Server:
    """uvicorn serving the API (`backend.api:create_app`, or backend.main:app with the
    dashboard) in a child process of its own process group."""

    def __init__(self, url: str, data_dir: Path, workers: int, with_ui: bool) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TREEGRPO_")}
        env.update(
            {
                "TREEGRPO_DATABASE_URL": url,
                "TREEGRPO_DATA_DIR": str(data_dir),
                "TREEGRPO_ARTIFACT_DIR": str(data_dir / "artifacts"),
                # One key submits every POST of the run: the per-key quota of queued jobs would
                # answer 429 past 100 and the bench would time refusals, not submissions.
                "TREEGRPO_MAX_QUEUED_PER_KEY": "0",
                "GRADIO_ANALYTICS_ENABLED": "False",
                "HF_HUB_OFFLINE": "1",
            }
        )
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            *(["backend.main:app"] if with_ui else ["backend.api:create_app", "--factory"]),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API exited with code {self.process.returncode}")
            try:
                if httpx.get(f"{self.base}/api/v1/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the API was not ready within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# the load


class Connection:
    """A minimal HTTP/1.1 keep-alive client on one asyncio stream.

    General clients spend more CPU per request than this server does (httpx's async pool tops
    out at a few hundred requests per second with 50 connections on this machine), so they would
    measure themselves; this one only writes a request and reads status, headers and a
    Content-Length body, which is all the routes under test answer with.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None


async def _load(
    base: str,
    clients: int,
    seconds: float,
    warmup: float,
    make_request: Any,
) -> tuple[list[float], int, int]:
    """Closed-loop clients; returns (latencies of successes after warm-up, errors, every
    request sent, warm-up included)."""
    latencies: list[float] = []
    errors = 0
    sent_total = 0
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    host, port = base.removeprefix("http://").split(":")

    async def client(number: int) -> None:
        nonlocal errors, sent_total
        rng = random.Random(number)
        connection = Connection(host, int(port))
        try:
            while True:
                sent = time.perf_counter()
                if sent >= stop_at:
                    return
                try:
                    ok = await make_request(connection, rng) < 300
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    ok = False
                    await connection.close()
                done = time.perf_counter()
                sent_total += 1
                if sent >= measure_from and done <= stop_at:
                    if ok:
                        latencies.append(done - sent)
                    else:
                        errors += 1
        finally:
            await connection.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    return latencies, errors, sent_total


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (uvicorn's workers)."""
    import psutil

    parent = psutil.Process(pid)
    total = 0.0
    for process in [parent, *parent.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def run_routes(
    base: str, key: str, ids: list[int], args: argparse.Namespace, server_pid: int
) -> list[RouteResult]:
    headers = {"X-API-Key": key}
    body = json.dumps({"kind": "train", "preset": args.preset}).encode()

    async def list_jobs(connection: Connection, rng: random.Random) -> int:
        return await connection.request("GET", "/api/v1/jobs")

    async def one_job(connection: Connection, rng: random.Random) -> int:
        return await connection.request("GET", f"/api/v1/jobs/{rng.choice(ids)}")

    async def create_job(connection: Connection, rng: random.Random) -> int:
        return await connection.request("POST", "/api/v1/jobs", body, headers)

    routes = [
        ("GET /jobs", list_jobs),
        ("GET /jobs/{id}", one_job),
        ("POST /jobs", create_job),
    ]
    results = []
    for name, request in routes:
        cpu_before = _cpu_seconds(server_pid)
        latencies, errors, sent = asyncio.run(
            _load(base, args.clients, args.seconds, args.warmup, request)
        )
        cpu_ms = 1000 * (_cpu_seconds(server_pid) - cpu_before) / max(sent, 1)
        results.append(summarise(name, args.clients, args.seconds, latencies, errors, cpu_ms))
    return results


# ---------------------------------------------------------------------------------------------
# reporting


def table(results: list[RouteResult]) -> str:
    lines = [
        "| route | clients | requests | errors | req/s | p50 ms | p90 ms | p99 ms | max ms "
        "| server CPU ms/req |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.route} | {r.clients} | {r.requests} | {r.errors} | {r.throughput:.0f} | "
            f"{r.p50_ms:.1f} | {r.p90_ms:.1f} | {r.p99_ms:.1f} | {r.max_ms:.1f} "
            f"| {r.server_cpu_ms:.2f} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        # Other work on the machine takes CPU from the server and the load generator alike.
        "load_average_1min_before": round(os.getloadavg()[0], 2),
    }


def write_docs(path: Path, report: dict[str, Any], results: list[RouteResult]) -> None:
    """Replace this benchmark's section of the file (or append it), leaving the rest."""
    settings = report["settings"]
    ui = ", dashboard mounted" if settings.get("with_ui") else ", API alone"
    reads = [r for r in results if r.route.startswith("GET")]
    verdict = "met" if reads and all(r.p99_ms < 100 and r.errors == 0 for r in reads) else "NOT met"
    capacity = ", ".join(
        f"{1000 / r.server_cpu_ms:.0f} req/s of {r.route}" for r in results if r.server_cpu_ms > 0
    )
    section = f"""{DOCS_TITLE}

`bench/api_load.py` starts the API under uvicorn ({settings["workers"]} worker process{ui})
against a fresh {settings["database"]} database seeded with {settings["jobs"]} `{settings["preset"]}`
train jobs, then drives each route with {settings["clients"]} concurrent closed-loop clients on
loopback (asyncio in a separate process, one keep-alive connection each) for
{settings["seconds"]} s after {settings["warmup"]} s of warm-up. Latency is send to last byte;
errors are non-2xx answers. Results in `bench/results/api_load.json`.

### {report["machine"]["cpus"]}-core {report["machine"]["cpu"]}, Python {report["machine"]["python"]}, {report["date"]}

Command: `.venv/bin/python bench/api_load.py --docs docs/BENCHMARKS.md`

{table(results)}

The 1-minute load average just before the run was
{report["machine"].get("load_average_1min_before", "?")}: other work on the machine competed
with the server and the load generator for the {report["machine"]["cpus"]} cores.

Target p99 < 100 ms for the reads at {settings["clients"]} clients: **{verdict}**.

How to read it. With {settings["clients"]} closed-loop clients the mean latency is clients /
throughput (Little's law), so the tail follows throughput, and throughput is the CPU the server
gets divided by its CPU time per request (last column, all server processes, user + system).
At those costs one free core serves about: {capacity}. Meeting the target needs about
{settings["clients"] * 10} req/s (a queue of {settings["clients"]} drained in ~100 ms), that is
under ~{1000 / (settings["clients"] * 10):.1f} ms of server CPU per request on a core of its own.

Where the time goes (py-spy profiles of the server on this machine): the HTTP layer (uvicorn
with uvloop and httptools), FastAPI's routing and dependencies and the hop to a worker thread
are about half of a read; the rest is one autocommit PostgreSQL round trip (no BEGIN or
ROLLBACK; `GET /jobs` gets its page and the total in one query, the latest reward from the job
row) and orjson encoding of plain rows (no pydantic model built or validated; a job's config
is spliced in as the stored JSON text, and list items leave it out). `POST /jobs` checks the
key with one Core select, validates the config, inserts with one INSERT ... RETURNING, commits,
and writes a message to the queue (kombu and Celery's send_task are about a fifth of it).
Levers outside this code: `treegrpo serve --workers N` on a machine with cores to spare, smaller
pages (`limit`), `If-None-Match` for pollers.
"""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(DOCS_TITLE)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip() + "\n\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per route")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured start per route")
    parser.add_argument("--jobs", type=int, default=200, help="jobs seeded before the load")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--preset", default="digits-treegrpo", help="config of seeded/new jobs")
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument(
        "--with-ui",
        action="store_true",
        help="serve backend.main:app (the dashboard mounted at /ui) instead of the API alone",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "api_load.json")
    parser.add_argument("--docs", type=Path, help="write the results section into this file")
    args = parser.parse_args(argv)
    host = machine()  # before the run: its load average is the other work's

    with tempfile.TemporaryDirectory(prefix="api-load-") as tmp:
        folder = Path(tmp)
        url, name = prepare_database(args.database, folder)
        server: Server | None = None
        try:
            key, ids = seed(url, args.jobs, args.preset)
            server = Server(url, folder / "data", args.workers, args.with_ui)
            server.wait_ready()
            results = run_routes(server.base, key, ids, args, server.process.pid)
        finally:
            if server is not None:
                server.stop()
            drop_database(url, name)

    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": host,
        "settings": {
            "clients": args.clients,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "jobs": args.jobs,
            "workers": args.workers,
            "preset": args.preset,
            "database": "PostgreSQL" if args.database == "postgresql" else "SQLite",
            "with_ui": args.with_ui,
        },
        "results": [asdict(r) for r in results],
    }
    print(table(results))
    for r in results:
        if r.route.startswith("GET"):
            mark = "ok" if r.p99_ms < 100 else "above the 100 ms target"
            print(f"{r.route}: p99 {r.p99_ms:.1f} ms ({mark})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.docs:
        write_docs(args.docs, report, results)
        print(f"wrote its section in {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
