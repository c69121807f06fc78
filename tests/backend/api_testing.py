"""Helpers for the backend tests: throwaway databases, a live server on loopback, seeded rows.

PostgreSQL tests get a database of their own (treegrpo_test_<random>) on 127.0.0.1:5432, made
and dropped by the tests, so parallel xdist workers and other suites never share one.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from fastapi import FastAPI
from sqlalchemy import text

from backend import crud, storage
from backend.db import engine_for, session_scope
from backend.models import Job
from backend.settings import Settings

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
TABLES = (
    "branch_nodes",
    "branches",
    "tree_nodes",
    "trees",
    "samples",
    "metrics",
    "job_datasets",
    "datasets",
    "jobs",
    "audit_log",
    "api_keys",
)


def create_pg_database(prefix: str = "treegrpo_test") -> tuple[str, str]:
    """(name, SQLAlchemy URL) of a new, empty database."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    return name, PG_URL.format(name=name)


def drop_pg_database(name: str, url: str) -> None:
    engine_for(url).dispose()
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def truncate_all(url: str) -> None:
    with engine_for(url).begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))


def make_settings(tmp: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp / "data",
        "database_url": database_url,
        "broker_url": "",  # kombu's filesystem transport under data_dir/broker
        "artifact_dir": tmp / "artifacts",
        "reads_require_key": False,
        "sse_poll_seconds": 0.02,
        "sse_keepalive_seconds": 15.0,
        "sse_max_seconds": 10.0,
        "cors_origins": [],
    }
    values.update(overrides)
    settings = Settings(**values)
    settings.resolved_artifact_dir.mkdir(parents=True, exist_ok=True)
    return settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """uvicorn serving `app` on a free loopback port, in a thread of the test process."""

    def __init__(self, app: FastAPI) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the live server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@contextlib.contextmanager
def live_server(app: FastAPI) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server


# ---------------------------------------------------------------------------------------------
# seeding rows the way workers write them


def new_job(url: str, **fields: Any) -> Job:
    values: dict[str, Any] = {
        "kind": "train",
        "name": "seeded",
        "config": {"epochs": 3},
        "algorithm": "treegrpo",
        "progress_total": 3,
    }
    values.update(fields)
    with session_scope(url) as session:
        job, _ = crud.create_job(session, **values)
    return job


def run_job(url: str, job_id: int, worker: str = "w1") -> int:
    """Claim the job like a worker; returns the attempt."""
    with session_scope(url) as session:
        job = crud.claim_job(session, job_id=job_id, worker=worker)
        assert job is not None
        return job.attempt


def finish(url: str, job_id: int, attempt: int, status: str, error: str | None = None) -> None:
    with session_scope(url) as session:
        assert crud.finish_job(session, job_id=job_id, attempt=attempt, status=status, error=error)


def add_metrics(url: str, job_id: int, steps: range, *, attempt: int | None = None) -> None:
    with session_scope(url) as session:
        for step in steps:
            crud.upsert_metrics(
                session,
                job_id=job_id,
                step=step,
                values={"reward_mean": 0.1 * step, "loss": 1.0 / (step + 1)},
            )
            if attempt is not None:
                crud.heartbeat(session, job_id=job_id, attempt=attempt, progress_step=step)


def tree_nodes(k: int = 2) -> list[dict[str, Any]]:
    """A root with k children, each a leaf with an image path: 1 + k nodes."""
    nodes: list[dict[str, Any]] = [
        {
            "node_index": 0,
            "parent_index": None,
            "depth": 0,
            "step_index": 0,
            "t": 1.0,
            "sigma": 0.7,
            "is_leaf": False,
            "reward": 0.5,  # a backed-up value, not a leaf reward
            "image_path": "jobs/1/trees/epoch-000000/tree-00/images/0.png",
            # A branch point: the one node a branch can start from.
            "latent_path": "jobs/1/trees/epoch-000000/tree-00/latents/node-00000.safetensors",
        }
    ]
    for child in range(1, k + 1):
        nodes.append(
            {
                "node_index": child,
                "parent_index": 0,
                "depth": 1,
                "step_index": 3,
                "t": 0.5,
                "sigma": 0.7,
                "is_leaf": True,
                "log_prob_old": -1.5,
                "reward": 0.2 * child,
                "rewards": {"brightness": 0.2 * child},
                "advantage": 0.1 * child,
                "image_path": f"jobs/1/trees/epoch-000000/tree-00/images/{child}.png",
            }
        )
    return nodes


def add_tree(url: str, job_id: int, epoch: int, prompt: str = "a bright square", k: int = 2) -> int:
    with session_scope(url) as session:
        tree = crud.add_tree(
            session,
            job_id=job_id,
            epoch=epoch,
            index=0,
            prompt=prompt,
            seed=7,
            window_start=0,
            k=k,
            depth=1,
            steps=6,
            backup="mean",
            nodes=tree_nodes(k),
        )
        return tree.id


def add_samples(url: str, job_id: int, epoch: int, prompts: list[str]) -> None:
    with session_scope(url) as session:
        crud.add_samples(
            session,
            job_id=job_id,
            epoch=epoch,
            items=[
                {
                    "prompt": prompt,
                    "image_path": f"{storage.samples_relpath(job_id, epoch)}/{i:03d}.png",
                    "reward": 0.5,
                    "rewards": {"brightness": 0.5},
                }
                for i, prompt in enumerate(prompts)
            ],
        )
