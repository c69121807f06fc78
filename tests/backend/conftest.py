"""Fixtures of the backend tests: a migrated database per test (SQLite file, or a PostgreSQL
database of this test session, emptied between tests), settings pointing every path into the
test's tmp folder (broker: kombu's filesystem transport), the app, a client and an API key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_testing import create_pg_database, drop_pg_database, make_settings, truncate_all
from fastapi import FastAPI
from fastapi.testclient import TestClient
from moto_s3 import AWS_ENV, moto_server

from backend import crud, migrate
from backend.api import create_app
from backend.db import engine_for, session_scope
from backend.settings import Settings


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    """One migrated PostgreSQL database for this test session (this xdist worker)."""
    name, url = create_pg_database()
    try:
        migrate.upgrade(url)
        yield url
    finally:
        drop_pg_database(name, url)


def _sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'db' / 'treegrpo.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: SQLite, and PostgreSQL as an integration test."""
    if request.param == "sqlite":
        url = _sqlite_url(tmp_path)
        yield url
        engine_for(url).dispose()
    else:
        url = request.getfixturevalue("pg_session_url")
        truncate_all(url)
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    """SQLite only, for tests about the API rather than the database."""
    url = _sqlite_url(tmp_path)
    yield url
    engine_for(url).dispose()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def api_key(settings: Settings) -> str:
    with session_scope(settings.resolved_database_url) as session:
        _, key = crud.create_api_key(session, name="tests", role="admin")
    return key


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"X-API-Key": api_key}


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server for the module's tests (tests/moto_s3.py)."""
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The credentials moto accepts, so no S3 client looks further."""
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
