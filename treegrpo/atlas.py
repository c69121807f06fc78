"""One thumbnail atlas per logged tree: the drawable nodes' images as tiles of one picture.

    image_bytes, index = build_atlas([(node_index, pil_image), ...])

Why: the tree inspector draws hundreds to thousands of thumbnails. One image per tree is one
request, one decode and one cache entry in the browser, where separate images were ~600
requests and data: URIs re-sent with every redraw (docs/shared notes, issue 28).

- Which nodes: those the inspector draws (`drawable`): the root, every node an SDE step drew
  (it has a log-prob), every node with other than one child, and the leaves; a deterministic
  ODE-chain node (one child, no log-prob) is collapsed into an edge and never shown.
- Tiles: 48 px JPEG (quality 82) for colour images; 24 px past `SMALL_TILES_ABOVE` tiles (a
  4,096-leaf tree draws ~9,600 nodes, fitted at a few px each). Small greyscale images (the
  digits model's 16 px) go as PNG at their native size: a few KB and pixel-exact.
- The index (JSON): tile size, columns, format and `slots` {node_index: slot}; slot s sits at
  x = (s % columns) * tile, y = (s // columns) * tile.

Torch-free (PIL only): the worker calls it when it logs a tree, and the API when it builds the
atlas once for a tree logged before atlases existed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

from PIL import Image

ATLAS_VERSION = 1
TILE_PX = 48
SMALL_TILE_PX = 24
SMALL_TILES_ABOVE = 1500
JPEG_QUALITY = 82
# Greyscale images at most this many pixels on a side are kept at their native size (PNG).
NATIVE_MAX_PX = 32
MAX_COLUMNS = 64  # keeps a 1,500-tile 48 px atlas 3,072 px wide at most


def drawable(nodes: Iterable[tuple[int, int | None, bool]]) -> set[int]:
    """The node ids the inspector draws, from (id, parent id, has a log-prob) triples: every
    node except a chain node (it has a parent, exactly one child and no log-prob). The same rule
    as frontend/tree_svg.py's ODE-chain collapsing."""
    rows = list(nodes)
    ids = {node_id for node_id, _, _ in rows}
    children: dict[int, int] = {}
    for node_id, parent, _ in rows:
        if parent is not None and parent in ids and parent != node_id:
            children[parent] = children.get(parent, 0) + 1
    return {
        node_id
        for node_id, parent, sde in rows
        if parent is None or parent not in ids or sde or children.get(node_id, 0) != 1
    }


def native_side(image: Image.Image) -> Image.Image:
    """A nearest-neighbour upscaled image (the stored 64 px PNG of a 16 px digit) back at its
    native size; any other image unchanged."""
    side = max(image.size)
    for factor in (8, 4, 2):
        if side % factor or side // factor < 4:
            continue
        small = image.resize(
            (image.width // factor, image.height // factor), Image.Resampling.NEAREST
        )
        if small.resize(image.size, Image.Resampling.NEAREST).tobytes() == image.tobytes():
            return small
    return image


def atlas_format(images: Sequence[Image.Image]) -> tuple[str, int]:
    """("png", native px) for small greyscale images, else ("jpeg", tile px by count)."""
    if images and all(im.mode in ("1", "L", "LA") for im in images):
        side = max(max(native_side(im).size) for im in images)
        if side <= NATIVE_MAX_PX:
            return "png", side
    return "jpeg", TILE_PX if len(images) <= SMALL_TILES_ABOVE else SMALL_TILE_PX


def build_atlas(tiles: Sequence[tuple[int, Image.Image]]) -> tuple[bytes, dict[str, Any]]:
    """The atlas image's bytes and its index for these (node id, image) pairs, in that order."""
    images = [image for _, image in tiles]
    fmt, tile = atlas_format(images)
    count = max(1, len(tiles))
    columns = min(MAX_COLUMNS, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / columns)
    mode = "L" if fmt == "png" else "RGB"
    sheet = Image.new(mode, (columns * tile, rows * tile), 0 if mode == "L" else (241, 243, 244))
    slots: dict[str, int] = {}
    for slot, (node_id, image) in enumerate(tiles):
        sheet.paste(_tile(image, tile, mode), ((slot % columns) * tile, (slot // columns) * tile))
        slots[str(node_id)] = slot
    out = io.BytesIO()
    if fmt == "png":
        sheet.save(out, format="PNG", optimize=True)
    else:
        sheet.save(out, format="JPEG", quality=JPEG_QUALITY)
    index = {
        "version": ATLAS_VERSION,
        "format": fmt,
        "tile": tile,
        "columns": columns,
        "width": sheet.width,
        "height": sheet.height,
        "slots": slots,
    }
    return out.getvalue(), index


def atlas_name(index: dict[str, Any]) -> str:
    return "atlas.png" if index.get("format") == "png" else "atlas.jpg"


def _tile(image: Image.Image, tile: int, mode: str) -> Image.Image:
    """The image as a `tile` px square in `mode` (centre-cropped to a square first)."""
    image = native_side(image) if mode == "L" else image
    image = image.convert(mode)
    w, h = image.size
    if w != h:
        side = min(w, h)
        image = image.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))
    if image.size == (tile, tile):
        return image
    resample = Image.Resampling.NEAREST if mode == "L" else Image.Resampling.BILINEAR
    return image.resize((tile, tile), resample, reducing_gap=None if mode == "L" else 2.0)
