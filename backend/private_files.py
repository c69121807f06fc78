"""The embedded deployment's files are its user's alone: the data folder 0700 (the SQLite
database, the broker's messages, artifacts and the local key are inside it) and the database
file 0600, whatever the umask made them, installs from before this rule included.

    make_private_dir(settings.data_dir)      # at API and `treegrpo up` start
    make_private_database(path)              # the SQLite file, at each new connection
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("backend")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# SQLite's companions of a database file: its write-ahead log, shared memory and journal.
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def _tighten(path: Path, mode: int) -> None:
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if current & 0o077 == 0:  # already closed to group and others
        return
    try:
        os.chmod(path, mode)
    except PermissionError:  # another user's file (a shared mount): say so, do not fail
        log.warning("%s is mode %o, readable by others, and not ours to change", path, current)


def make_private_dir(path: Path) -> None:
    """`path` (when it exists) open to its owner only."""
    _tighten(path, PRIVATE_DIR)


def make_private_database(database: str | Path) -> None:
    """A SQLite database file and its companions, open to their owner only."""
    for suffix in SQLITE_COMPANIONS:
        _tighten(Path(f"{database}{suffix}"), PRIVATE_FILE)
