"""The tree inspector's API calls, cached: trees by ETag (If-None-Match, so an unchanged tree
costs a 304 and no parsing), atlases by their image's ETag (one download per atlas and UI
process, kept as a file the page gets through Gradio's file route: same origin, so it works
with reads closed and behind a path prefix), and the laid-out views built from them.

Trees never change once logged (branch results come beside them and change the ETag), so
nothing here expires by time; entries leave least recently used first.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from frontend.client import ApiClient, ApiError, Tree

T = TypeVar("T")
MAX_TREES = 24
MAX_VIEWS = 24
MAX_ATLASES = 64


@dataclass(frozen=True)
class FetchedTree:
    """A tree as the API answered it: `branch_ids` are its branch records that have nodes (each
    has an atlas of its own), `etag` the answer's ETag."""

    tree: Tree
    etag: str
    branch_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class AtlasFile:
    """An atlas on this machine: `index` as GET /trees/{id}/atlas/index answered it."""

    path: Path
    index: Mapping[str, Any]

    @property
    def etag(self) -> str:
        return str(self.index.get("etag", ""))

    def file_data(self) -> dict[str, Any]:
        """A Gradio FileData dict: Gradio copies the file into its cache and gives the page a
        same-origin URL for it (gradio.processing_utils.move_files_to_cache)."""
        mime = "image/png" if self.index.get("format") == "png" else "image/jpeg"
        return {
            "path": str(self.path),
            "orig_name": self.path.name,
            "mime_type": mime,
            "meta": {"_type": "gradio.FileData"},
        }


class _Lru(OrderedDict[Any, Any]):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)

    def hit(self, key: Any) -> Any:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value


@dataclass
class TreeCache:
    """One per UI process (CACHE), or per test."""

    folder: Path | None = None
    trees: _Lru = field(default_factory=lambda: _Lru(MAX_TREES))
    atlases: _Lru = field(default_factory=lambda: _Lru(MAX_ATLASES))
    views: _Lru = field(default_factory=lambda: _Lru(MAX_VIEWS))
    pixelated: dict[tuple[str, int], bool] = field(default_factory=dict)  # per (API, job)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def atlas_dir(self) -> Path:
        if self.folder is None:
            # Under the system's temp folder: Gradio serves files from there.
            self.folder = Path(tempfile.mkdtemp(prefix="treegrpo-atlas-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder

    def view(self, key: Any, make: Callable[[], T]) -> T:
        """The view cached under `key` (trees and atlases' ETags), made once."""
        with self.lock:
            found = self.views.hit(key)
        if found is not None:
            return found
        made = make()
        with self.lock:
            self.views.put(key, made)
        return made


CACHE = TreeCache()


def _who(client: ApiClient) -> tuple[str, str]:
    """Cache entries belong to an API and a key: with reads closed a keyless session must not
    see what a key holder fetched."""
    key = client.api_key or ""
    return client.base_url, hashlib.sha256(key.encode()).hexdigest()[:16] if key else ""


def fetch_tree(client: ApiClient, tree_id: int, cache: TreeCache = CACHE) -> FetchedTree:
    """GET /trees/{id}, with If-None-Match when this tree was fetched before."""
    key = (*_who(client), int(tree_id))
    with cache.lock:
        known: FetchedTree | None = cache.trees.hit(key)
    headers = {"If-None-Match": known.etag} if known and known.etag else None
    # Only the drawn nodes (598 of 1,367 states for k=4, d=4): what the view and panel show.
    response = client._request(
        "GET", f"/trees/{int(tree_id)}", params={"drawn": "true"}, headers=headers
    )
    if response.status_code == 304 and known is not None:
        return known
    try:
        payload = response.json()
    except ValueError as exc:
        raise ApiError("The API answered GET /trees with something that is not JSON.") from exc
    groups = payload.get("branches") if isinstance(payload, Mapping) else None
    branch_ids = tuple(
        int(g["id"])
        for g in groups or []
        if isinstance(g, Mapping) and isinstance(g.get("id"), int) and g.get("nodes")
    )
    fetched = FetchedTree(
        tree=Tree.from_json(payload if isinstance(payload, Mapping) else {}),
        etag=response.headers.get("etag", ""),
        branch_ids=branch_ids,
    )
    with cache.lock:
        cache.trees.put(key, fetched)
    return fetched


def fetch_atlas(
    client: ApiClient,
    tree_id: int,
    branch_id: int | None = None,
    cache: TreeCache = CACHE,
    *,
    tree_etag: str = "",
) -> AtlasFile | None:
    """The tree's (or a branch's) atlas as a local file; None when it has none (no images)
    or the API cannot give it (the tree is then drawn without thumbnails). `tree_etag`: the
    tree's answer's ETag (a tree logged again gets another one, and so another atlas)."""
    key = (*_who(client), int(tree_id), branch_id, tree_etag)
    params = {"branch": branch_id} if branch_id is not None else None
    with cache.lock:
        known: AtlasFile | None = cache.atlases.hit(key)
    # A training tree's atlas never changes: no request at all once it is here.
    if known is not None and branch_id is None and known.path.is_file():
        return known
    try:
        index = client._json("GET", f"/trees/{int(tree_id)}/atlas/index", params=params)
        etag = str(index["etag"])
        if known is not None and known.etag == etag and known.path.is_file():
            return known
        suffix = ".png" if index.get("format") == "png" else ".jpg"
        path = cache.atlas_dir() / f"{hashlib.sha256(etag.encode()).hexdigest()[:24]}{suffix}"
        if not path.is_file():
            image = client._request(
                "GET",
                f"/trees/{int(tree_id)}/atlas",
                params={**(params or {}), "v": etag},
                headers={"Accept": "image/*"},
            )
            partial = path.with_suffix(path.suffix + ".part")
            partial.write_bytes(image.content)
            partial.replace(path)
    except (ApiError, KeyError, TypeError, OSError):
        return None
    found = AtlasFile(path=path, index=index)
    with cache.lock:
        cache.atlases.put(key, found)
    return found
