"""How far the dataset imports this API process runs have got, by an id their client chose.

An import runs inside its request: POST /datasets and POST /datasets/upload answer once the
version is stored (a million rows take about half a minute). A client that wants to show
progress sends a `progress_id` with the request and asks GET /datasets/imports/{progress_id}
from another connection while it waits (the CLI and the dashboard do):

    with BOARD.track(progress_id) as report:      # the request's import
        report("reading", bytes_read, total_bytes)
    BOARD.get(progress_id)                        # {"phase", "done", "total"} or None

Phases: `starting` (the request is in, nothing read yet: total 0), `reading` (bytes of the
source read and checked, treegrpo/datasets/progress.py), then `storing` (bytes of the version's
files put into the artifact store). An entry lives while its
request runs. The board is this process's memory: behind several API processes a poll may reach
one that does not run the import and get a 404, which the clients show as "no figures yet".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Report = Callable[[str, int, int], None]  # (phase, done, total)
MAX_TRACKED = 256  # imports followed at once; past it an import runs untracked


def _ignore(_phase: str, _done: int, _total: int) -> None:
    return None


class ImportBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, dict[str, Any]] = {}

    @contextmanager
    def track(self, progress_id: str | None) -> Iterator[Report]:
        """A report function for one import, its entry removed when the block ends. Without an
        id, with an id in use (another request's) or with the board full, reports go nowhere."""
        with self._lock:
            tracked = (
                progress_id is not None
                and progress_id not in self._items
                and len(self._items) < MAX_TRACKED
            )
            if tracked:
                assert progress_id is not None
                self._items[progress_id] = {"phase": "starting", "done": 0, "total": 0}
        if not tracked:
            yield _ignore
            return
        assert progress_id is not None

        def report(phase: str, done: int, total: int) -> None:
            with self._lock:
                self._items[progress_id] = {"phase": phase, "done": done, "total": total}

        try:
            yield report
        finally:
            with self._lock:
                self._items.pop(progress_id, None)

    def get(self, progress_id: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._items.get(progress_id)
            return dict(item) if item is not None else None


BOARD = ImportBoard()
