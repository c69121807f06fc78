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
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from backend import crud, migrate
from backend.api import create_app
from backend.db import engine_for, session_scope
from backend.models import AuditEntry, Base, Secret

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


def test_0004_moves_branch_nodes_out_of_the_training_trees(empty_url: str) -> None:
    """Before 0004 a branch job appended its nodes to the training tree (branch_job_id set), so
    the tree's summary counted them. After it the tree has its training nodes back, and each
    branch is a record with its own nodes, nested branches included."""
    migrate.upgrade(empty_url, "0002")
    now = datetime(2026, 11, 30, tzinfo=UTC)
    engine = engine_for(empty_url)
    job = (
        "INSERT INTO jobs (id, kind, name, status, config, params, algorithm, created_at, "
        "updated_at, attempt, progress_step, progress_total) VALUES (:id, :kind, 'j', "
        "'succeeded', '{}', '{}', 'treegrpo', :now, :now, 1, 0, 0)"
    )
    node = (
        "INSERT INTO tree_nodes (id, tree_id, node_index, parent_id, depth, step_index, t, "
        "sigma, is_leaf, reward, branch_job_id, image_path) VALUES (:id, 1, :index, :parent, "
        ":depth, :step, 0.5, 0.5, :leaf, :reward, :branch, :image)"
    )
    with engine.begin() as connection:
        for job_id, kind in ((1, "train"), (2, "sample"), (3, "sample")):
            connection.execute(text(job), {"id": job_id, "kind": kind, "now": now})
        connection.execute(
            text(
                "INSERT INTO trees (id, job_id, epoch, index, prompt, seed, window_start, k, "
                "depth, steps, backup, meta, created_at) VALUES (1, 1, 0, 0, 'p', 0, 0, 2, 1, "
                "2, 'mean', '{}', :now)".replace("index", '"index"')
            ),
            {"now": now},
        )
        rows = [
            # The training tree: a root and two leaves (rewards 0.2, 0.4).
            (1, 0, None, 0, 0, False, None, None),
            (2, 1, 1, 1, 2, True, 0.2, None),
            (3, 2, 1, 1, 2, True, 0.4, None),
            # Job 2 branched the root: two children, one leaf each (1.0, 0.8).
            (4, 3, 1, 1, 1, False, None, 2),
            (5, 4, 1, 1, 1, False, None, 2),
            (6, 5, 4, 1, 2, True, 1.0, 2),
            (7, 6, 5, 1, 2, True, 0.8, 2),
            # Job 3 branched node 4, which job 2 grew.
            (8, 7, 4, 2, 2, True, 0.9, 3),
        ]
        for id_, index, parent, depth, step, leaf, reward, branch in rows:
            connection.execute(
                text(node),
                {
                    "id": id_,
                    "index": index,
                    "parent": parent,
                    "depth": depth,
                    "step": step,
                    "leaf": leaf,
                    "reward": reward,
                    "branch": branch,
                    "image": f"img/{id_}.png",
                },
            )
    migrate.upgrade(empty_url)
    with session_scope(empty_url) as session:
        items, _ = crud.list_trees(session, job_id=1)
        assert (items[0]["nodes"], items[0]["leaves"]) == (3, 2)
        assert items[0]["mean_reward"] == pytest.approx(0.3)
        (first, _), (second, _) = crud.list_branches(session, tree_id=1)
        assert (first.job_id, first.node_id, first.from_branch_node_id, first.k) == (2, 1, None, 2)
        assert [n.node_index for n in first.nodes] == [0, 1, 2, 3]
        by_image = {n.image_path: n for n in first.nodes}
        assert by_image["img/4.png"].parent_id is None
        assert by_image["img/6.png"].parent_id == by_image["img/4.png"].id
        assert by_image["img/6.png"].reward == 1.0 and by_image["img/6.png"].is_leaf
        assert second.node_id is None
        assert second.from_branch_node_id == by_image["img/4.png"].id
        assert [(n.parent_id, n.image_path) for n in second.nodes] == [(None, "img/8.png")]
        job = crud.get_job(session, job_id=1)
        assert job.tags == [] and job.notes == "" and job.deleted_at is None
    # Down again to 0002 and up: the schema round-trips (branch records are dropped).
    migrate.downgrade(empty_url, "0002")
    migrate.upgrade(empty_url)
    assert migrate.current_revision(empty_url) == migrate.head_revision()


def _seed_0004(url: str) -> str:
    """A 0004 database as a team left it: a key (returned in plain text), a job it submitted
    with an Idempotency-Key, and a stored secret."""
    migrate.upgrade(url, "0004")
    key = "tgk_" + "k" * 43
    now = datetime(2026, 12, 1, tzinfo=UTC)
    with engine_for(url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO api_keys (id, name, prefix, hashed_key, created_at) VALUES"
                " (1, 'laptop', 'tgk_kkkkkk', :hashed, :now)"
            ),
            {"hashed": crud.api_keys.hash_key(key), "now": now},
        )
        connection.execute(
            text(
                "INSERT INTO jobs (id, kind, name, status, config, params, algorithm, created_at,"
                " updated_at, attempt, progress_step, progress_total, tags, notes,"
                " idempotency_key, request_hash) VALUES (1, 'train', 'a', 'succeeded', '{}',"
                " '{}', 'treegrpo', :now, :now, 1, 2, 2, '[]', '', 'retry-1', 'h')"
            ),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO secrets (name, sealed, created_at, updated_at) VALUES"
                " ('HF_TOKEN', 'sealed', :now, :now)"
            ),
            {"now": now},
        )
    return key


def test_0005_keeps_existing_keys_working_as_admin(empty_url: str, tmp_path: Path) -> None:
    key = _seed_0004(empty_url)
    migrate.upgrade(empty_url)
    assert _differences(empty_url) == []
    with session_scope(empty_url) as session:
        row = crud.verify_api_key(session, key=key)
        assert row is not None and (row.name, row.role) == ("laptop", "admin")
        job = crud.get_job(session, job_id=1)
        assert job.owner_key_id is None and job.idempotency_key == "retry-1"
        secret = session.scalars(select(Secret)).one()
        # Sent nowhere until an admin names its hosts.
        assert (secret.name, secret.hosts) == ("HF_TOKEN", [])
        assert session.scalars(select(AuditEntry)).all() == []
    # Through the API: the old key answers as an admin and may do what only admins may.
    app = create_app(at.make_settings(tmp_path, empty_url))
    with TestClient(app) as client:
        headers = {"X-API-Key": key}
        assert client.get("/api/v1/me", headers=headers).json()["role"] == "admin"
        assert client.get("/api/v1/audit", headers=headers).status_code == 200
        assert client.post("/api/v1/jobs/1/cancel", headers=headers).status_code == 409  # done
    # The role is one of three.
    with engine_for(empty_url).connect() as connection, pytest.raises(IntegrityError):
        connection.execute(text("UPDATE api_keys SET role = 'root' WHERE id = 1"))


def test_0005_scopes_idempotency_keys_to_their_key_and_downgrades(empty_url: str) -> None:
    _seed_0004(empty_url)
    migrate.upgrade(empty_url)
    insert_job = text(
        "INSERT INTO jobs (id, kind, name, status, config, params, algorithm, created_at,"
        " updated_at, attempt, progress_step, progress_total, tags, notes, idempotency_key,"
        " owner_key_id) VALUES (:id, 'train', 'b', 'queued', '{}', '{}', 'treegrpo', :now,"
        " :now, 0, 0, 2, '[]', '', 'retry-1', :owner)"
    )
    now = datetime.now(UTC)
    with engine_for(empty_url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO api_keys (id, name, prefix, hashed_key, created_at, role) VALUES"
                " (2, 'ci', 'tgk_cccccc', 'h2', :now, 'member')"
            ),
            {"now": now},
        )
        # Key 1 and key 2 may each use 'retry-1' once.
        connection.execute(insert_job, {"id": 2, "now": now, "owner": 1})
        connection.execute(insert_job, {"id": 3, "now": now, "owner": 2})
    with engine_for(empty_url).connect() as connection, pytest.raises(IntegrityError):
        connection.execute(insert_job, {"id": 4, "now": now, "owner": 2})
    migrate.downgrade(empty_url, "0004")
    assert migrate.current_revision(empty_url) == "0004"
    with engine_for(empty_url).connect() as connection:
        kept = connection.execute(text("SELECT id, idempotency_key FROM jobs ORDER BY id")).all()
        columns = {c["name"] for c in inspect(connection).get_columns("api_keys")}
    # The global constraint is back: only the oldest job keeps the shared key.
    assert [tuple(row) for row in kept] == [(1, "retry-1"), (2, None), (3, None)]
    assert "role" not in columns and "audit_log" not in migrate.tables(empty_url)
    migrate.upgrade(empty_url)
    assert _differences(empty_url) == []
