"""A dataset in the local Hugging Face cache, by id, pinned to its commit; never downloaded.

`datasets.load_dataset(id)` fails offline even when the files are cached (its module factory
wants the hub). What works is the hub's own cache: `snapshot_download(repo_id,
repo_type="dataset", revision=..., local_files_only=True)` gives the snapshot folder, whose name
is the 40-hex commit, and folders.py reads its split files.
"""

from __future__ import annotations

import re
from pathlib import Path

from treegrpo.datasets.errors import DatasetError

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def parse_dataset_id(value: str) -> tuple[str, str | None]:
    """ "org/name[@revision]" -> (repo id, revision or None); DatasetError if malformed."""
    repo, _, revision = value.partition("@")
    if not _ID.match(repo) or ".." in repo:
        raise DatasetError(f"not a dataset id ORG/NAME[@REVISION]: {value!r}")
    return repo, revision or None


def cached_snapshot(value: str, cache_dir: Path | None = None) -> tuple[Path, str, str]:
    """(snapshot folder, repo id, commit) of a cached dataset, without any network call."""
    repo, revision = parse_dataset_id(value)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(
            snapshot_download(
                repo,
                repo_type="dataset",
                revision=revision,
                local_files_only=True,
                cache_dir=str(cache_dir) if cache_dir else None,
            )
        )
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as exc:
        raise DatasetError(
            f"dataset {value!r} is not in the local Hugging Face cache "
            f"({type(exc).__name__}); nothing is downloaded: fetch it on a connected machine "
            "with `huggingface-cli download --repo-type dataset ...` and copy the cache",
        ) from None
    commit = folder.name
    if not _COMMIT.match(commit):
        raise DatasetError(f"the cached snapshot of {value!r} is not named by a commit: {commit}")
    return folder, repo, commit
