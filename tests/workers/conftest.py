"""Fixtures of the worker tests: one private stack per module and transport.

The "filesystem" stack (SQLite, kombu's filesystem transport) needs nothing running; the
"redis" stack (PostgreSQL and Redis on 127.0.0.1) is marked `integration`, so tests/conftest.py
skips it where those services are unreachable, except under CI=true.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_stack import Stack, make_stack

TRANSPORTS = [
    pytest.param("filesystem", id="filesystem"),
    pytest.param("redis", id="redis", marks=pytest.mark.integration),
]


@pytest.fixture(scope="module", params=TRANSPORTS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root: Path = tmp_path_factory.mktemp(f"stack-{request.param}")
    with make_stack(str(request.param), root) as made:
        yield made
