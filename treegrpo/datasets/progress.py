"""How far an import has read its source: bytes of the source files read, of their total size.

    progress = ImportProgress(total_bytes(files), report)   # report(done, total), throttled
    for row in read_rows(path, on_read=progress.advance): ...
    progress.finish()                                       # a last report(total, total)

Bytes rather than rows because the total is known before the first row is read (a text file's
row count is not). Text files report their file position; a Parquet file, whose bytes are read
column chunk by column chunk, reports the share of its rows read times its size. Readers report
every PROGRESS_ROWS rows, and `ImportProgress` passes a report on at most every `interval`
seconds, so a million rows cost a few hundred calls, not a million.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

ProgressFn = Callable[[int, int], None]  # (bytes read, total bytes)
PROGRESS_ROWS = 1024
REPORT_SECONDS = 0.25  # the least time between two reports


def total_bytes(files: Iterable[Path]) -> int:
    return sum(path.stat().st_size for path in files)


class ImportProgress:
    """Adds up the bytes read (`advance`, the readers' `on_read`) and reports the running total:
    never backwards, never past `total`, never more often than every `interval` seconds, and
    always once more at `finish` with done == total."""

    def __init__(
        self,
        total: int,
        report: ProgressFn,
        *,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.report = report
        self.interval = REPORT_SECONDS if interval is None else interval
        self.clock = clock
        self.done = 0
        self.reported = -1
        self.last_report = -float("inf")

    def advance(self, nbytes: int) -> None:
        self.done = min(self.total, self.done + max(0, nbytes))
        now = self.clock()
        if self.done > self.reported and now - self.last_report >= self.interval:
            self._send(now)

    def finish(self) -> None:
        self.done = self.total
        if self.reported != self.total:
            self._send(self.clock())

    def _send(self, now: float) -> None:
        self.reported, self.last_report = self.done, now
        self.report(self.done, self.total)
