"""Hub ids from the local Hugging Face cache, with no network call, ever.

    folder = local_folder("model", "stabilityai/stable-diffusion-3.5-medium")
    folder = local_folder("reward_options.pickscore.path", "yuvalkirstain/PickScore_v1@main")

A reference that is an existing folder is that folder (on one's own machine; under a studio
worker's file rule see `local_folder`). Otherwise, if it looks like `ORG/NAME`
(optionally `@REVISION`: a branch, tag or commit hash), it is looked up in the cache that
huggingface_hub uses (HF_HOME / HF_HUB_CACHE, default ~/.cache/huggingface/hub) with
`local_files_only=True`: `models--ORG--NAME/refs/REVISION` names a snapshot folder. A missing
id is a ConfigError that names the id, the cache folder searched and the command that fetches it
on a connected machine.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from treegrpo.errors import ConfigError

# ORG/NAME as the hub spells repo ids, optionally @REVISION.
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")


def parse_hub_id(reference: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) if `reference` reads as a hub id, else None."""
    if reference.startswith((".", "/", "~")):
        return None
    match = HUB_ID.match(reference)
    if match is None or ".." in match["repo"]:
        return None
    return match["repo"], match["revision"]


def cache_folder(cache_dir: str | Path | None = None) -> Path:
    """The hub cache that is searched: `cache_dir`, else huggingface_hub's (from its env)."""
    if cache_dir is not None:
        return Path(cache_dir)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def local_folder(
    field: str,
    reference: str,
    what: str = "a folder",
    cache_dir: str | Path | None = None,
    roots: Sequence[Path] | None = None,
) -> Path:
    """The folder `reference` names: itself if it is a folder, else its cached hub snapshot.
    `what` says what the folder should hold, for the error.

    Under a file rule (`roots`, or the one a studio worker installed: treegrpo/file_roots.py)
    the folder, or the cached snapshot, must lie under a root, and `ORG/NAME` is always a hub
    id: what a job may open never depends on which relative folders exist on the worker."""
    from treegrpo import file_roots

    roots = roots if roots is not None else file_roots.installed()
    parsed = parse_hub_id(reference)
    if roots is None:
        path = Path(reference).expanduser()
        if path.is_dir():
            return path
    elif parsed is None:
        path = file_roots.within_roots(field, reference, roots)
        if path.is_dir():
            return path
    if parsed is None:
        raise ConfigError(field, f"no such folder: {reference} does not exist (expected {what})")
    snapshot = cached_snapshot(field, reference, what, cache_dir)
    return snapshot if roots is None else file_roots.within_roots(field, str(snapshot), roots)


def cached_snapshot(
    field: str, reference: str, what: str = "a folder", cache_dir: str | Path | None = None
) -> Path:
    """The snapshot folder of hub id `reference` in the local cache, or a ConfigError."""
    parsed = parse_hub_id(reference)
    if parsed is None:
        raise ConfigError(field, f"{reference!r} is not a hub id ORG/NAME[@REVISION]")
    repo, revision = parsed
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = cache_folder(cache_dir)
    try:
        snapshot = snapshot_download(
            repo, revision=revision, cache_dir=cache, local_files_only=True
        )
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as error:
        fetch = f"hf download {repo}" + (f" --revision {revision}" if revision else "")
        raise ConfigError(
            field,
            f"{reference!r} is not a local folder ({what}), and the hub id {repo!r}"
            + (f" at revision {revision!r}" if revision else "")
            + f" is not in the local Hugging Face cache {str(cache)!r} (nothing is downloaded "
            f"here). On a machine with internet access run `{fetch}` with the same HF_HOME "
            f"and copy the cache, or give a local folder ({type(error).__name__})",
        ) from error
    return Path(snapshot)
