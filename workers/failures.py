"""What a failed job tells whoever can read it through the API, and what only the worker's
operator sees.

A job's error (the job row) and its log are served by the API to every key that may read, so
they carry a one-line reason that names the rule that failed, never a traceback (install paths,
library internals). Quoted values the job did not send itself are blanked: a loader's message
may quote a field of a file the job pointed at (`model_type`, `_class_name` of a JSON file), and
a config must not be a way to read files on the worker. Reading errors of files and folders are
one message, so an error does not tell whether a path exists, is a folder or is unreadable.

The full traceback goes to a file beside the job's result (`traceback_path`); the supervisor
moves it into the worker's own log (workers/supervisor.py).
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ERROR_CHARS = 2000
TRACEBACK_FILE = "traceback.txt"
BLANKED = "'…'"

_FILE_ERRORS = (
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    FileExistsError,
)
FILE_ERROR = (
    "a file or folder that the job's config names could not be read (missing, of the wrong "
    "kind, or not readable by the worker): check model, reward and prompt paths"
)
# A Python repr of a string: '...' or "..." (with escapes).
_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")


def sent_strings(config: Any) -> frozenset[str]:
    """Every string of a job's config (keys and values): what its owner sent, so an error may
    quote it back."""
    found: set[str] = set()
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.add(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return frozenset(found)


def blank_foreign_quotes(text: str, sent: Iterable[str]) -> str:
    """`text` with every quoted value that is not one of `sent` replaced by '…'."""
    allowed = set(sent)

    def keep_or_blank(match: re.Match[str]) -> str:
        return match.group(0) if match.group(0)[1:-1] in allowed else BLANKED

    return _QUOTED.sub(keep_or_blank, text)


def describe(exc: BaseException, sent: Iterable[str] = ()) -> str:
    """A one-line error for the job row: the rule or exception type, and its message with
    foreign quoted values blanked."""
    from treegrpo.config import ConfigError

    if isinstance(exc, ConfigError):
        text = f"invalid setting {exc}"
    elif isinstance(exc, _FILE_ERRORS):
        text = FILE_ERROR
    else:
        message = str(exc).strip() or type(exc).__name__
        text = f"{type(exc).__name__}: {message}"
    text = " ".join(blank_foreign_quotes(text, sent).split())
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def traceback_path(result_file: Path) -> Path:
    return result_file.with_name(TRACEBACK_FILE)


def save_traceback(exc: BaseException, result_file: Path | None) -> None:
    """The full traceback beside the job's result (readable by the worker's user only), for
    the supervisor to log; on stderr when there is no result file (a run by hand). Appended:
    every rank of a multi-process job adds its own."""
    text = "".join(traceback.format_exception(exc))
    if result_file is None:
        print(text, file=sys.stderr, flush=True)
        return
    path = traceback_path(result_file)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def take_traceback(result_file: Path) -> str | None:
    """The traceback a job's process saved beside `result_file`, removed once read."""
    path = traceback_path(result_file)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    path.unlink(missing_ok=True)
    return text
