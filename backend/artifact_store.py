"""The artifact store behind one interface: a local folder (the default) or an S3-compatible bucket
(backend/s3_store.py), chosen by the settings (open_store).

Keys are the store-relative POSIX paths that rows keep (backend/storage.py's layout). Every key
from outside goes through check_key first: absolute paths, '..' and empty parts, NUL bytes and
backslashes are refused the same way for a bucket as for a folder, so a request can never name
an object outside the job layout.

Checkpoints are published file by file with a COMPLETE marker written last: a checkpoint whose
marker is missing (its upload died half-way) is never listed, fetched or made a job's latest.
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path, PurePosixPath

from backend.settings import Settings
from backend.storage import OutsideStore, resolve_inside

CHECKPOINT_MARKER = "COMPLETE"
CHUNK = 1 << 20


def check_key(key: str) -> str:
    """`key` when it is a plain relative path inside the layout, else OutsideStore."""
    if not key or "\x00" in key or "\\" in key:
        raise OutsideStore(key)
    pure = PurePosixPath(key)
    if pure.is_absolute() or any(part in ("..", ".", "") for part in key.split("/")):
        raise OutsideStore(key)
    return key


class ArtifactStore(ABC):
    """What the API and the workers need of a store. `remote` stores are reached over the
    network; a worker then works in a local folder and mirrors it (workers/mirror.py)."""

    remote: bool = False

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size in bytes; None when there is no such file."""

    @abstractmethod
    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset` (nothing when missing or shorter)."""

    @abstractmethod
    def stream(self, key: str) -> Iterator[bytes]:
        """The whole object in chunks."""

    @abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """Every key under the folder `prefix`, sorted."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file (big ones in parts); the object appears whole or not at all."""

    @abstractmethod
    def download(self, key: str, path: Path) -> None:
        """Write the object to `path` (through a temporary name, so never half a file)."""

    def signed_url(self, key: str, seconds: int) -> str | None:
        """A short-lived URL that reads the object without our credentials (None: no such
        thing for this store, stream it instead)."""
        return None

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under the folder `prefix`; returns how many went."""

    # -- built on the above ------------------------------------------------------------------

    def put_folder(self, prefix: str, folder: Path, *, skip: frozenset[str] = frozenset()) -> None:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            if name not in skip:
                self.put_file(f"{prefix}/{name}", path)

    def put_checkpoint(self, prefix: str, folder: Path) -> None:
        """Every file of a checkpoint, then its marker: only a whole upload is a checkpoint."""
        self.put_folder(prefix, folder, skip=frozenset({CHECKPOINT_MARKER}))
        marker = folder / CHECKPOINT_MARKER
        marker.write_text("complete\n")
        self.put_file(f"{prefix}/{CHECKPOINT_MARKER}", marker)

    def complete_checkpoints(self, prefix: str) -> list[str]:
        """The checkpoint folders under `prefix` whose upload finished (marker present)."""
        marker = "/" + CHECKPOINT_MARKER
        return sorted(key[: -len(marker)] for key in self.keys(prefix) if key.endswith(marker))


class LocalStore(ArtifactStore):
    """A folder (TREEGRPO_ARTIFACT_DIR): what the embedded default and a shared volume use.
    resolve_inside also refuses symlinks whose target is outside the folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def delete_prefix(self, prefix: str) -> int:
        try:
            folder = self.path(check_key(prefix.rstrip("/")))
        except OutsideStore:
            return 0
        if not folder.is_dir():
            return 0
        count = sum(1 for path in folder.rglob("*") if path.is_file())
        shutil.rmtree(folder, ignore_errors=True)
        return count

    def path(self, key: str) -> Path:
        return resolve_inside(self.root, check_key(key))

    def size(self, key: str) -> int | None:
        try:
            path = self.path(key)
            return path.stat().st_size if path.is_file() else None
        except (OutsideStore, OSError, ValueError):
            return None

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with self.path(key).open("rb") as handle:
                handle.seek(offset)
                return handle.read(length)
        except (OutsideStore, OSError):
            return b""

    def stream(self, key: str) -> Iterator[bytes]:
        with self.path(key).open("rb") as handle:
            while block := handle.read(CHUNK):
                yield block

    def keys(self, prefix: str) -> list[str]:
        try:
            base = self.path(prefix)
        except (OutsideStore, OSError):
            return []
        found = []
        for directory, _dirs, names in os.walk(base):
            for name in names:
                relative = Path(directory, name).relative_to(base).as_posix()
                key = f"{prefix.rstrip('/')}/{relative}"
                try:
                    if self.path(key).is_file():
                        found.append(key)
                except OutsideStore:
                    continue  # a symlink out of the store: not part of it
        return sorted(found)

    def put_file(self, key: str, path: Path) -> None:
        target = self.root / check_key(key)
        if target.resolve() == path.resolve():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        shutil.copyfile(path, partial)
        partial.replace(target)

    def download(self, key: str, path: Path) -> None:
        source = self.path(key)
        if source == path.resolve():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        shutil.copyfile(source, partial)
        partial.replace(path)


def open_store(settings: Settings) -> ArtifactStore:
    """The store the settings name: TREEGRPO_ARTIFACT_URL=s3://bucket/prefix, else the folder."""
    if settings.artifact_url:
        return _remote(settings.artifact_url, settings.s3_endpoint_url)
    return LocalStore(settings.resolved_artifact_dir)


@lru_cache(maxsize=8)
def _remote(url: str, endpoint: str | None) -> ArtifactStore:
    # One client per process and bucket: it keeps its connections.
    from backend.s3_store import S3Store

    return S3Store(url, endpoint)
