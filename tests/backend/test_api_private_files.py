"""The embedded deployment's database and data folder are private to their user, existing
installs included (issue 23: treegrpo.db was mode 644 beside a 600 key file)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import api_testing as at
from fastapi.testclient import TestClient

from backend import migrate
from backend.api import create_app
from backend.db import engine_for


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_existing_install_is_made_private_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    database = data / "treegrpo.db"
    url = f"sqlite:///{database}"
    settings = at.make_settings(tmp_path, url, data_dir=data)
    migrate.upgrade(url)
    engine_for(url).dispose()
    # As an install from before the rule left them (umask 022).
    os.chmod(data, 0o755)
    for path in data.glob("treegrpo.db*"):
        os.chmod(path, 0o644)
    assert _mode(database) == 0o644

    with TestClient(create_app(settings)) as client:
        assert _mode(data) == 0o700
        assert client.get("/api/v1/jobs").status_code == 200
    companions = sorted(data.glob("treegrpo.db*"))
    assert database in companions
    assert {path.name: _mode(path) for path in companions} == {
        path.name: 0o600 for path in companions
    }
    engine_for(url).dispose()


def test_a_new_database_is_private_whatever_the_umask(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'treegrpo.db'}"
    previous = os.umask(0o002)
    try:
        migrate.upgrade(url)
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "fresh" / "treegrpo.db") == 0o600
    engine_for(url).dispose()
