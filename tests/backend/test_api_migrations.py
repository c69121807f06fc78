"""Alembic migrations run up, down and up again on SQLite and PostgreSQL, and the migrated schema
matches the SQLAlchemy models (what `alembic check` verifies)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import api_testing as at
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from backend import migrate
from backend.db import engine_for
from backend.models import Base

TABLES = {"jobs", "metrics", "trees", "tree_nodes", "samples", "api_keys"}


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)],
)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
        yield url
        engine_for(url).dispose()
    else:
        name, url = at.create_pg_database("treegrpo_migrations")
        try:
            yield url
        finally:
            at.drop_pg_database(name, url)


def _differences(url: str) -> list[object]:
    with engine_for(url).connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "render_as_batch": True}
        )
        return list(compare_metadata(context, Base.metadata))


def test_up_down_up(empty_url: str) -> None:
    head = migrate.head_revision()
    assert head is not None
    migrate.upgrade(empty_url)
    assert migrate.current_revision(empty_url) == head
    assert migrate.tables(empty_url) >= TABLES
    migrate.downgrade(empty_url, "base")
    assert migrate.current_revision(empty_url) is None
    assert not (migrate.tables(empty_url) & TABLES)
    migrate.upgrade(empty_url)
    assert migrate.current_revision(empty_url) == head
    assert migrate.tables(empty_url) >= TABLES


def test_the_migrated_schema_matches_the_models(empty_url: str) -> None:
    migrate.upgrade(empty_url)
    assert _differences(empty_url) == []


def test_treegrpo_migrate_from_another_working_directory(tmp_path: Path) -> None:
    """alembic.ini and migrations/ are found beside the source tree, not in the working folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    database = tmp_path / "other.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREEGRPO_")}
    env["TREEGRPO_DATABASE_URL"] = f"sqlite:///{database}"
    treegrpo = Path(sys.executable).with_name("treegrpo")
    done = subprocess.run(
        [str(treegrpo), "migrate"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"at revision {migrate.head_revision()}" in done.stdout
    assert migrate.tables(f"sqlite:///{database}") >= TABLES
    assert list(elsewhere.iterdir()) == []  # nothing was written where it ran


def test_0002_fills_in_the_latest_reward_of_existing_jobs(empty_url: str) -> None:
    migrate.upgrade(empty_url, "0001")
    with engine_for(empty_url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO jobs (id, kind, name, status, config, params, algorithm, created_at,"
                " updated_at, attempt, progress_step, progress_total) VALUES (1, 'train', 'a',"
                " 'succeeded', '{}', '{}', 'treegrpo', :now, :now, 1, 2, 2), (2, 'train', 'b',"
                " 'queued', '{}', '{}', 'treegrpo', :now, :now, 0, 0, 2)"
            ),
            {"now": datetime.now(UTC)},
        )
        connection.execute(
            text(
                "INSERT INTO metrics (job_id, step, name, value) VALUES (1, 0, 'reward_mean', 0.5),"
                " (1, 2, 'reward_mean', 0.75), (1, 1, 'reward_mean', 0.6), (1, 3, 'loss', 9.0)"
            )
        )
    migrate.upgrade(empty_url)
    with engine_for(empty_url).connect() as connection:
        rows = connection.execute(
            text("SELECT id, latest_reward, latest_reward_step FROM jobs ORDER BY id")
        ).all()
    assert [tuple(row) for row in rows] == [(1, 0.75, 2), (2, None, None)]
