"""A tree's (or a branch's) thumbnail atlas as the API serves it: the one the worker wrote when
it logged the tree, or, for a tree logged before atlases existed, built once from the stored
node images (treegrpo/atlas.py) and stored beside them, so the next request only reads it.

The index the API answers keys tiles by the rows' ids (tree_nodes ids, or branch_nodes ids for
a branch), which is what GET /trees/{id} names; the stored atlas.json keys them by node_index
(the worker writes it before any row exists).
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, UnidentifiedImageError

from backend.artifact_store import ArtifactStore, check_key
from backend.storage import OutsideStore
from treegrpo.atlas import atlas_name, build_atlas, drawable

INDEX_NAME = "atlas.json"
MEDIA_TYPES = {"atlas.jpg": "image/jpeg", "atlas.png": "image/png"}
MAX_INDEX_BYTES = 4 << 20
MAX_ATLAS_BYTES = 64 << 20
MAX_IMAGE_BYTES = 16 << 20


@dataclass(frozen=True)
class AtlasNode:
    """What building an atlas needs of a node row."""

    id: int
    node_index: int
    parent_index: int | None
    sde: bool
    image_path: str | None


@dataclass(frozen=True)
class AtlasSource:
    """The nodes of one atlas and the folder it lives in; `every`: tile every node with an
    image (a branch), not only the drawable ones (a training tree)."""

    folder: str | None
    nodes: Sequence[AtlasNode]
    every: bool = False


@dataclass(frozen=True)
class Atlas:
    image: bytes
    media_type: str
    index: dict[str, Any]  # slots keyed by row id (str)


def folder_of(nodes: Sequence[AtlasNode], artifact_dir: str | None) -> str | None:
    """The atlas's folder: the tree's artifact_dir, else the folder above a node's images/."""
    if artifact_dir:
        return artifact_dir
    for node in nodes:
        if node.image_path:
            parent = PurePosixPath(node.image_path).parent
            return str(parent.parent if parent.name == "images" else parent)
    return None


def _read(store: ArtifactStore, key: str, limit: int) -> bytes | None:
    try:
        size = store.size(check_key(key))
    except OutsideStore:
        return None
    if size is None or size > limit:
        return None
    data = store.read_range(key, 0, size)
    return data if len(data) == size else None


def _stored(store: ArtifactStore, folder: str) -> tuple[bytes, dict[str, Any]] | None:
    raw = _read(store, f"{folder}/{INDEX_NAME}", MAX_INDEX_BYTES)
    if raw is None:
        return None
    try:
        index = json.loads(raw)
        name = str(index["image"])
    except (ValueError, KeyError, TypeError):
        return None
    if name not in MEDIA_TYPES:
        return None
    image = _read(store, f"{folder}/{name}", MAX_ATLAS_BYTES)
    return (image, index) if image is not None else None


def _build(store: ArtifactStore, source: AtlasSource) -> tuple[bytes, dict[str, Any]] | None:
    shown = drawable((n.node_index, n.parent_index, n.sde) for n in source.nodes)
    tiles: list[tuple[int, Image.Image]] = []
    for node in source.nodes:
        if not node.image_path or not (source.every or node.node_index in shown):
            continue
        data = _read(store, node.image_path, MAX_IMAGE_BYTES)
        if data is None:
            continue  # drawn without its image
        try:
            with Image.open(io.BytesIO(data)) as opened:
                opened.load()
                tiles.append((node.node_index, opened.copy()))
        except (UnidentifiedImageError, OSError, ValueError):
            continue
    if not tiles:
        return None
    image, index = build_atlas(tiles)
    index["image"] = atlas_name(index)
    return image, index


def _store(store: ArtifactStore, folder: str, image: bytes, index: dict[str, Any]) -> None:
    """The image first, then its index: a reader that finds the index finds the image."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in ((index["image"], image), (INDEX_NAME, json.dumps(index).encode())):
            path = Path(tmp) / name
            path.write_bytes(data)
            store.put_file(f"{folder}/{name}", path)


def load_atlas(store: ArtifactStore, source: AtlasSource) -> Atlas | None:
    """The stored atlas of `source`, else one built now (and stored when it has a folder);
    None when none of its nodes has a readable image. Blocking: call it off the event loop."""
    found = _stored(store, source.folder) if source.folder else None
    if found is None:
        found = _build(store, source)
        if found is None:
            return None
        if source.folder:
            _store(store, source.folder, *found)
    image, stored = found
    ids = {str(n.node_index): n.id for n in source.nodes}
    slots = {
        str(ids[key]): int(slot)
        for key, slot in dict(stored.get("slots", {})).items()
        if key in ids
    }
    index = {key: value for key, value in stored.items() if key not in ("slots", "image")}
    return Atlas(
        image=image, media_type=MEDIA_TYPES[stored["image"]], index={**index, "slots": slots}
    )
