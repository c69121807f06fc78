"""In-process helpers for the worker unit tests: a migrated SQLite database and artifact store in
a temp folder, made the process's settings (as the worker's child process sees them)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from backend import crud
from backend.db import engine_for, session_scope
from backend.migrate import upgrade
from backend.settings import Settings, get_settings
from treegrpo.config import resolve_config


@contextmanager
def local_settings(
    root: Path, monkeypatch: pytest.MonkeyPatch, **values: Any
) -> Iterator[Settings]:
    for key in list(os.environ):
        if key.startswith("TREEGRPO_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TREEGRPO_DATA_DIR", str(root / "data"))
    for key, value in values.items():
        monkeypatch.setenv(f"TREEGRPO_{key.upper()}", str(value))
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(settings.resolved_database_url)
    try:
        yield settings
    finally:
        engine_for(settings.resolved_database_url).dispose()
        get_settings.cache_clear()


def new_job(
    kind: str = "train",
    preset: str = "tiny-treegrpo",
    overrides: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> int:
    config = resolve_config(preset, overrides={"device": "cpu", **(overrides or {})})
    with session_scope() as session:
        job, _ = crud.create_job(
            session,
            kind=kind,
            name="unit",
            config=config.to_dict(),
            algorithm=config.algorithm,
            params=params or {},
        )
        return job.id


def claim(job_id: int, worker: str = "unit") -> int:
    """queued -> running; returns the attempt."""
    with session_scope() as session:
        job = crud.claim_job(session, job_id=job_id, worker=worker)
        assert job is not None
        return job.attempt


def row(job_id: int) -> dict[str, Any]:
    with session_scope() as session:
        job = crud.get_job(session, job_id=job_id)
        return {c.name: getattr(job, c.name) for c in job.__table__.columns}


def points(job_id: int) -> list[tuple[int, str, float]]:
    with session_scope() as session:
        return [(m.step, m.name, m.value) for m in crud.list_metrics(session, job_id=job_id)]
