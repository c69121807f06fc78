"""The worker's local copy of the artifact store. With a folder store it is the store itself and
every call here does nothing; with a bucket (TREEGRPO_ARTIFACT_URL), the job's process writes
into this folder (TREEGRPO_ARTIFACT_DIR, a cache) and what it writes goes up, and what it needs
(a checkpoint to resume from, a node's latent to branch from) comes down first.
"""

from __future__ import annotations

from pathlib import Path

from backend.artifact_store import ArtifactStore, open_store
from backend.settings import Settings
from backend.storage import resolve_inside


class Mirror:
    def __init__(self, store: ArtifactStore, cache: Path) -> None:
        self.store = store
        self.cache = cache

    @classmethod
    def of(cls, settings: Settings) -> Mirror:
        return cls(open_store(settings), settings.resolved_artifact_dir)

    @property
    def remote(self) -> bool:
        return self.store.remote

    def local(self, key: str) -> Path:
        return resolve_inside(self.cache, key)

    def publish(self, key: str) -> None:
        """Upload a file, or every file of a folder, from the cache."""
        if not self.remote:
            return
        path = self.local(key)
        if path.is_dir():
            self.store.put_folder(key, path)
        elif path.is_file():
            self.store.put_file(key, path)

    def publish_checkpoint(self, key: str) -> None:
        """A checkpoint folder, its marker last; until this returns it is nobody's latest."""
        if self.remote:
            self.store.put_checkpoint(key, self.local(key))

    def fetch(self, key: str) -> None:
        """Download a file, or a folder's files, that the cache lacks (or has at another size)."""
        if not self.remote:
            return
        size = self.store.size(key)
        keys = [key] if size is not None else self.store.keys(key)
        for item in keys:
            path = self.local(item)
            remote_size = size if item == key else self.store.size(item)
            if not path.is_file() or path.stat().st_size != remote_size:
                self.store.download(item, path)

    def fetch_checkpoints(self, key: str) -> None:
        """Every complete checkpoint under a job's checkpoints folder (never a half upload)."""
        if not self.remote:
            return
        for folder in self.store.complete_checkpoints(key):
            self.fetch(folder)

    def fetch_log(self, key: str) -> None:
        """The job's log as the store has it, when longer than the cached one (another worker
        ran the job before): appending to it keeps the whole story in one file."""
        if not self.remote:
            return
        size = self.store.size(key)
        path = self.local(key)
        if size is not None and (not path.is_file() or path.stat().st_size < size):
            self.store.download(key, path)
