"""Importing prompt datasets into the studio: a file, an upload, a folder or a cached hub id ->
a finished version in the artifact store (`datasets/<sha256>/`) -> its database row.

    row = import_dataset(session, settings=..., store=..., name="hpdv2", path="/data/hpdv2")

The version is built by a child process (`python -m treegrpo.datasets`, so the API's memory
stays flat) in a private temporary folder (treegrpo/datasets/), copied to the store
file by file with its manifest last, and only then gets its row: a failure at any step leaves
no row, so nothing half-imported is ever listed (files copied before a failure stay unlisted,
and a later import of the same content reuses them). Paths pass the file rule first
(treegrpo/file_roots.py, TREEGRPO_MODEL_ROOTS), the same rule as a job's model path.
`report(phase, done, total)` (backend/import_progress.py) hears the child's bytes read and the
bytes stored. With a bucket store, previews read a verified local copy (local_version).
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from backend import crud
from backend.artifact_store import ArtifactStore, LocalStore
from backend.import_progress import Report
from backend.models import Dataset
from backend.settings import Settings, hub_cache_folder
from treegrpo.datasets.errors import DatasetError
from treegrpo.datasets.progress import ProgressFn
from treegrpo.datasets.writer import MANIFEST
from treegrpo.errors import ConfigError
from treegrpo.file_roots import hub_cache_allowed, refusal, within_roots

PREFIX = "datasets"


def version_key(sha256: str) -> str:
    return f"{PREFIX}/{sha256}"


def work_folder(settings: Settings) -> Path:
    """A new private folder for one import (removed by the caller)."""
    base = settings.data_dir.resolve() / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="dataset-", dir=base))


def publish(
    store: ArtifactStore,
    folder: Path,
    manifest: dict[str, Any],
    on_stored: ProgressFn | None = None,
) -> None:
    """Copy a finished version into the store: split files first, the manifest last.
    `on_stored(bytes stored, total bytes)` hears of each file put."""
    key = version_key(manifest["sha256"])
    if store.size(f"{key}/{MANIFEST}") is not None:
        return  # the same content is stored already (files named by their content's hash)
    files = [f"{split}.parquet" for split in sorted(manifest["splits"])] + [MANIFEST]
    total = sum((folder / name).stat().st_size for name in files)
    stored = 0
    for name in files:
        store.put_file(f"{key}/{name}", folder / name)
        stored += (folder / name).stat().st_size
        if on_stored is not None:
            on_stored(stored, total)


def checked_path(field: str, value: str, settings: Settings) -> Path:
    """A path from a request, under the operator's roots (ConfigError naming `field`)."""
    return within_roots(field, value, settings.resolved_model_roots)


def run_import(
    spec: dict[str, Any], out: Path, on_progress: ProgressFn | None = None
) -> dict[str, Any]:
    """The manifest of one import run in a child process (`python -m treegrpo.datasets`): what
    parsing allocates goes back to the system when it exits, so the API's memory stays flat.
    With `on_progress`, the child's progress lines (bytes read, total) are passed on as they
    come; its last line is the answer."""
    command = [
        sys.executable,
        "-m",
        "treegrpo.datasets",
        json.dumps({**spec, "out": str(out), "progress": on_progress is not None}),
    ]
    answer: dict[str, Any] = {}
    # stderr to a file: a child that writes much there never blocks on a full pipe.
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
        try:
            assert process.stdout is not None
            for line in process.stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                if "progress" in message:
                    if on_progress is not None:
                        done, total = message["progress"]
                        on_progress(int(done), int(total))
                else:
                    answer = message
            returncode = process.wait()
        finally:
            if process.poll() is None:  # the caller's callback failed: stop the child
                process.kill()
                process.wait()
        errors.seek(0)
        stderr = errors.read()[-4000:].decode("utf-8", "replace")
    if "manifest" in answer:
        manifest: dict[str, Any] = answer["manifest"]
        return manifest
    if "error" in answer:
        error = answer["error"]
        raise DatasetError(error["reason"], row=error.get("row"), source=error.get("source"))
    raise RuntimeError(f"the import process failed (exit {returncode}): {stderr.strip()[-1000:]}")


def build(
    session: Session,
    *,
    settings: Settings,
    store: ArtifactStore,
    name: str,
    spec: dict[str, Any],
    owner_key_id: int | None,
    report: Report | None = None,
) -> tuple[Dataset, bool]:
    """Import (`spec`, run_import), publish, insert the row; temporary files always go.
    `report(phase, done, total)` hears how far it got (backend/import_progress.py)."""
    work = work_folder(settings)
    reading = storing = None
    if report is not None:
        reading = functools.partial(report, "reading")
        storing = functools.partial(report, "storing")
    try:
        manifest = run_import(spec, work / "version", reading)
        publish(store, work / "version", manifest, storing)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return crud.create_dataset(session, name=name, manifest=manifest, owner_key_id=owner_key_id)


def import_dataset(
    session: Session,
    *,
    settings: Settings,
    store: ArtifactStore,
    name: str,
    path: str | None = None,
    hub: str | None = None,
    split: str = "train",
    prompt_column: str = "prompt",
    owner_key_id: int | None = None,
    report: Report | None = None,
) -> tuple[Dataset, bool]:
    """A file or folder under the roots (`path`), or a cached hub dataset (`hub`)."""
    if (path is None) == (hub is None):
        raise DatasetError("give exactly one of path and hub")
    if path is not None:
        source = checked_path("path", path, settings)
        if not source.exists():
            raise DatasetError("no such file or folder", source=path)
        spec: dict[str, Any] = {
            "kind": "folder" if source.is_dir() else "file",
            "source": str(source),
            "split": split,
            "prompt_column": prompt_column,
        }
    else:
        assert hub is not None
        cache = hub_cache_folder()
        roots = settings.resolved_model_roots
        if not hub_cache_allowed(cache, roots):
            raise refusal("hub", roots)
        spec = {
            "kind": "hub",
            "source": hub,
            "cache_dir": str(cache),
            "prompt_column": prompt_column,
        }
    return build(
        session,
        settings=settings,
        store=store,
        name=name,
        spec=spec,
        owner_key_id=owner_key_id,
        report=report,
    )


def import_upload(
    session: Session,
    *,
    settings: Settings,
    store: ArtifactStore,
    name: str,
    file: Path,
    filename: str,
    split: str = "train",
    prompt_column: str = "prompt",
    owner_key_id: int | None = None,
    report: Report | None = None,
) -> tuple[Dataset, bool]:
    """An uploaded file (already streamed to `file`), its format told by `filename`."""
    spec = {
        "kind": "file",
        "source": str(file),
        "name": filename,
        "split": split,
        "prompt_column": prompt_column,
    }
    return build(
        session,
        settings=settings,
        store=store,
        name=name,
        spec=spec,
        owner_key_id=owner_key_id,
        report=report,
    )


def cache_folder(settings: Settings, sha256: str) -> Path:
    """Where the API keeps its copy of a version held in a bucket."""
    return settings.data_dir.resolve() / "cache" / version_key(sha256)


def local_version(store: ArtifactStore, settings: Settings, sha256: str) -> Path:
    """A local folder holding the version: the store's own, or a copy of a bucket's.

    A copy is downloaded into a private folder, checked against the manifest's file hashes and
    then renamed into the cache in one step, so concurrent previews never read (or write) a
    half-downloaded file, and a cached folder always holds a whole, verified version."""
    from treegrpo.datasets.table import verify

    key = version_key(sha256)
    if isinstance(store, LocalStore):
        return store.path(key)
    cache = cache_folder(settings, sha256)
    if (cache / MANIFEST).is_file():
        return cache
    items = store.keys(key)
    if f"{key}/{MANIFEST}" not in items:
        raise DatasetError(f"dataset version {sha256[:12]} is not in the artifact store")
    partial = work_folder(settings)
    try:
        for item in items:
            store.download(item, partial / item.rsplit("/", 1)[1])
        verify(partial, sha256)
        cache.parent.mkdir(parents=True, exist_ok=True)
        if cache.exists() and not (cache / MANIFEST).is_file():
            shutil.rmtree(cache, ignore_errors=True)  # left by an older, interrupted copy
        try:
            partial.rename(cache)
        except OSError:
            if not (cache / MANIFEST).is_file():  # else another request's copy won the race
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return cache


def remove_files(store: ArtifactStore, settings: Settings, sha256: str) -> None:
    """The version's files in the store, and the API's copy of them."""
    store.delete_prefix(version_key(sha256))
    if store.remote:
        shutil.rmtree(cache_folder(settings, sha256), ignore_errors=True)


__all__ = ["ConfigError", "DatasetError", "import_dataset", "import_upload", "local_version"]
