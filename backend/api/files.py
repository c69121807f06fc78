"""Files out of the artifact store: log chunks, checkpoint zips and artifact media types.

Every path goes through storage.resolve_inside first; a checkpoint folder's files are checked one
by one too, so a symlink inside it that points out of the store is left out of the zip.
"""

from __future__ import annotations

import mimetypes
import os
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from backend.artifact_store import CHECKPOINT_MARKER, ArtifactStore
from backend.storage import OutsideStore, resolve_inside

# Served as themselves; anything else (html, svg, js, ...) is a download, so nothing written into
# the store can run script in the API's origin.
INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/gif",
        "application/json",
        "text/plain",
        "text/csv",
    }
)
SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


def ascii_name(name: str) -> str:
    """A file name safe inside a Content-Disposition header."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)


def media_type(path: Path | PurePosixPath) -> tuple[str, bool]:
    """(media type, inline?) for an artifact file."""
    guessed, _ = mimetypes.guess_type(path.name)
    if path.suffix in {".log", ".jsonl"}:
        guessed = "text/plain"
    if guessed in INLINE_TYPES:
        return guessed, True
    return "application/octet-stream", False


def read_chunk(path: Path, offset: int, limit: int) -> bytes:
    """Up to `limit` bytes from `offset`; nothing when the file is missing or shorter."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(limit)
    except OSError:  # missing, a folder, ...: no log yet
        return b""


class _Sink:
    """A write-only, unseekable file for zipfile: what is written is collected for yielding."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def checkpoint_files(root: Path, relpath: str) -> list[tuple[Path, str]]:
    """(real path, name in the zip) of each regular file of a checkpoint inside the store."""
    base = resolve_inside(root, relpath)
    if base.is_file():
        return [(base, base.name)]
    if not base.is_dir():
        raise FileNotFoundError(relpath)
    files: list[tuple[Path, str]] = []
    for directory, _dirs, names in os.walk(base):
        for name in sorted(names):
            local = Path(directory, name)
            arcname = local.relative_to(base).as_posix()
            try:
                real = resolve_inside(root, f"{relpath.rstrip('/')}/{arcname}")
            except OutsideStore:
                continue  # a symlink out of the store: never served
            if real.is_file():
                files.append((real, arcname))
    return sorted(files, key=lambda item: item[1])


def _stored_zip(entries: Iterable[tuple[zipfile.ZipInfo, Iterable[bytes]]]) -> Iterator[bytes]:
    """A zip of (entry, its blocks), yielded as it is written (stored, not deflated: weights
    don't shrink), so neither side holds a whole file."""
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:  # type: ignore[call-overload]
        for info, blocks in entries:
            info.compress_type = zipfile.ZIP_STORED
            with archive.open(info, "w") as target:
                for block in blocks:
                    target.write(block)
                    if data := sink.take():
                        yield data
            if data := sink.take():
                yield data
    if data := sink.take():
        yield data


def store_zip_stream(store: ArtifactStore, prefix: str) -> Iterator[bytes]:
    """A zip of every object under `prefix` in a remote store (a checkpoint), streamed from it
    as it is read; the upload marker is left out. Nothing is listed or read before the first
    block is asked for (the route iterates it in a worker thread)."""
    keys = [key for key in store.keys(prefix) if not key.endswith("/" + CHECKPOINT_MARKER)]
    stamp = time.localtime()[:6]

    def entries() -> Iterator[tuple[zipfile.ZipInfo, Iterable[bytes]]]:
        for key in keys:
            info = zipfile.ZipInfo(key[len(prefix.rstrip("/")) + 1 :], date_time=stamp)
            info.file_size = store.size(key) or 0
            yield info, store.stream(key)

    yield from _stored_zip(entries())


def zip_stream(files: list[tuple[Path, str]], chunk: int = 1 << 20) -> Iterator[bytes]:
    """A zip of `files`, produced as it is read."""

    def blocks(path: Path) -> Iterator[bytes]:
        with path.open("rb") as source:
            while block := source.read(chunk):
                yield block

    yield from _stored_zip(
        (zipfile.ZipInfo.from_file(real, name), blocks(real)) for real, name in files
    )
