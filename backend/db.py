"""Engine and short-lived sessions. One engine per process and URL, created lazily."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from backend.private_files import make_private_database
from backend.settings import get_settings


def _json_dumps(value: Any) -> str:
    """orjson for what the JSON columns store (a job's config on every POST): about 10x faster
    than json.dumps. Anything it refuses (an integer past 64 bits) goes through json.dumps."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_pre_ping=True,
            json_deserializer=orjson.loads,
            json_serializer=_json_dumps,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            # WAL lets the API read while a worker writes; foreign keys are off by default.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            if parsed.database and parsed.database != ":memory:":
                # SQLite made the file with the umask's mode (often 0644): the database holds
                # key hashes, configs and sealed secrets, so it is its user's alone.
                make_private_database(parsed.database)

        return engine
    connect_args: dict[str, object] = {}
    if parsed.get_backend_name() == "postgresql":
        # Fail in seconds, not minutes, when the server is unreachable (503, /ready).
        connect_args["connect_timeout"] = 5
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=20,
        max_overflow=40,
        pool_timeout=10,
        connect_args=connect_args,
        json_deserializer=orjson.loads,
        json_serializer=_json_dumps,
    )


def get_engine() -> Engine:
    return engine_for(get_settings().resolved_database_url)


@lru_cache(maxsize=8)
def _factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    return _factory(url or get_settings().resolved_database_url)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A short transaction: commit on success, roll back on error, always close."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ping(url: str | None = None) -> None:
    """Raises if the database cannot answer a trivial query."""
    with engine_for(url or get_settings().resolved_database_url).connect() as connection:
        connection.execute(text("SELECT 1"))
