"""A job's log in the artifact store (storage.log_relpath), written by the worker and its child.

Both processes append whole lines (O_APPEND), so their lines interleave but never tear; the
child's stdout and stderr (library warnings, tracebacks) go to the same file. The API serves it
at GET /jobs/{id}/logs.
"""

from __future__ import annotations

import time
from pathlib import Path

from treegrpo.secrets import redact_text


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


class JobLog:
    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, message: str) -> None:
        # A config field named like a secret (api_key: ..., token=...) never reaches the log.
        message = redact_text(message)
        lines = "".join(
            f"{stamp()} [{self.source}] {line}\n" for line in message.splitlines() or [""]
        )
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(lines)

    def last_line(self, max_bytes: int = 4096) -> str:
        """The last non-empty line of the log (for an error message), or ''."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(0, 2)
                size = handle.tell()
                handle.seek(max(0, size - max_bytes))
                tail = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        return lines[-1] if lines else ""
