"""How far running dataset imports have got, by an id their client chose, in the database so
that every API process can answer for every import.

An import runs inside its request: POST /datasets and POST /datasets/upload answer once the
version is stored (a million rows take about half a minute). A client that wants to show
progress sends a `progress_id` with the request and asks GET /datasets/imports/{progress_id}
from another connection while it waits (the CLI and the dashboard do); behind several API
processes that poll may reach any of them:

    with ImportBoard(database_url).track(progress_id) as report:   # the request's import
        report("reading", bytes_read, total_bytes)
    crud.import_progress(session, progress_id=...)  # {"phase", "done", "total"} or None

Phases: `starting` (the request is in, nothing read yet: total 0), `reading` (bytes of the
source read and checked, treegrpo/datasets/progress.py), then `storing` (bytes of the version's
files put into the artifact store). A row lives while its request runs; writes are at most a
few a second (a new phase and the last bytes always go through). A row whose import stopped
writing for crud.dataset_imports.STALE_SECONDS (its process died) is not answered and may
be taken over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from backend import crud
from backend.db import session_scope

Report = Callable[[str, int, int], None]  # (phase, done, total)
WRITE_EVERY_SECONDS = 0.25


def _ignore(_phase: str, _done: int, _total: int) -> None:
    return None


class ImportBoard:
    def __init__(self, database_url: str) -> None:
        self.url = database_url

    @contextmanager
    def track(self, progress_id: str | None) -> Iterator[Report]:
        """A report function for one import, its row removed when the block ends. Without an id
        or with an id in use (another request's), reports go nowhere."""
        if progress_id is None:
            yield _ignore
            return
        with session_scope(self.url) as session:
            claimed = crud.claim_import_progress(session, progress_id=progress_id)
        if not claimed:
            yield _ignore
            return
        lock = threading.Lock()
        last_phase, last_at = "starting", 0.0

        def report(phase: str, done: int, total: int) -> None:
            nonlocal last_phase, last_at
            now = time.monotonic()
            with lock:
                if phase == last_phase and done < total and now - last_at < WRITE_EVERY_SECONDS:
                    return
                last_phase, last_at = phase, now
                with session_scope(self.url) as session:
                    crud.set_import_progress(
                        session, progress_id=progress_id, phase=phase, done=done, total=total
                    )

        try:
            yield report
        finally:
            with lock, session_scope(self.url) as session:
                crud.end_import_progress(session, progress_id=progress_id)
