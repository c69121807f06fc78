"""Writing trees and galleries to a folder: small PNGs plus JSON that points at them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from torch import Tensor

from treegrpo.atlas import atlas_name, build_atlas, drawable
from treegrpo.tree_record import TreeNodeRecord, TreeRecord

if TYPE_CHECKING:
    from treegrpo.callbacks import SampleBatch

THUMBNAIL_MIN = 64  # small images are upscaled (nearest) so a 16x16 digit is visible
THUMBNAIL_MAX = 128  # large ones are downscaled to keep trees of hundreds of nodes light


def to_pil(image: Tensor) -> Image.Image:
    """(C, H, W) float in [0, 1] -> an 8-bit PIL image (L for one channel, RGB for three)."""
    array = (image.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    if array.shape[0] == 1:
        return Image.fromarray(array[0], mode="L")
    return Image.fromarray(array[:3].transpose(1, 2, 0), mode="RGB")


def thumbnail(image: Tensor) -> Image.Image:
    pil = to_pil(image)
    side = max(pil.size)
    if side < THUMBNAIL_MIN:
        scale = -(-THUMBNAIL_MIN // side)
        return pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    if side > THUMBNAIL_MAX:
        pil.thumbnail((THUMBNAIL_MAX, THUMBNAIL_MAX))
    return pil


def image_grid(
    images: Tensor, columns: int, cell: int = THUMBNAIL_MIN, pad: int = 2
) -> Image.Image:
    """(N, C, H, W) in [0, 1] -> one image, `columns` wide, each cell `cell` pixels."""
    count = images.shape[0]
    rows = -(-count // columns)
    grid = Image.new("RGB", (columns * (cell + pad) + pad, rows * (cell + pad) + pad), "white")
    for i in range(count):
        tile = to_pil(images[i]).convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
        grid.paste(tile, (pad + (i % columns) * (cell + pad), pad + (i // columns) * (cell + pad)))
    return grid


def before_after_grid(before: SampleBatch, after: SampleBatch) -> Image.Image:
    """Baseline gallery above the latest one (same prompts and noise), each labelled with its
    epoch and mean rewards. With few distinct prompts, each column holds one prompt."""
    from PIL import ImageDraw

    count = min(len(before.prompts), len(after.prompts))
    distinct = len(dict.fromkeys(before.prompts))
    columns = distinct if distinct <= 12 else 8
    label_height = 16
    blocks = []
    for batch in (before, after):
        grid = image_grid(batch.images[:count], columns=min(columns, count))
        means = ", ".join(
            f"{name} {float(r[:count].mean()):.3f}" for name, r in batch.rewards.items()
        )
        block = Image.new("RGB", (max(grid.width, 260), grid.height + label_height), "white")
        ImageDraw.Draw(block).text((4, 2), f"epoch {batch.epoch}: {means}", fill="black")
        block.paste(grid, (0, label_height))
        blocks.append(block)
    gap = 6
    out = Image.new("RGB", (blocks[0].width, blocks[0].height + gap + blocks[1].height), "white")
    out.paste(blocks[0], (0, 0))
    out.paste(blocks[1], (0, blocks[0].height + gap))
    return out


def write_atlas(nodes: list[TreeNodeRecord], out_dir: Path, *, every: bool = False) -> str | None:
    """out_dir/atlas.jpg (or .png) and out_dir/atlas.json: the drawable nodes' thumbnails as
    one image (treegrpo/atlas.py), keyed by the record's node ids; `every` takes every node
    with an image (a branch's few nodes). Returns the atlas file's name, None without images."""
    shown = drawable((n.id, n.parent_id, n.log_prob is not None) for n in nodes)
    tiles = [
        (n.id, to_pil(n.image)) for n in nodes if n.image is not None and (every or n.id in shown)
    ]
    if not tiles:
        return None
    data, index = build_atlas(tiles)
    name = atlas_name(index)
    (out_dir / name).write_bytes(data)
    (out_dir / "atlas.json").write_text(json.dumps({**index, "image": name}))
    return name


def write_tree(record: TreeRecord, out_dir: Path) -> dict[str, Any]:
    """out_dir/tree.json, out_dir/images/node-XXXXX.png and the tree's atlas (write_atlas);
    image paths are relative."""
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    nodes = []
    for node in record.nodes:
        rel: str | None = None
        if node.image is not None:
            rel = f"images/node-{node.id:05d}.png"
            thumbnail(node.image).save(out_dir / rel)
        nodes.append(node.to_json(rel))
    document = {
        "prompt": record.prompt,
        **record.meta,
        "k": record.k,
        "depth": record.depth,
        "steps": record.steps,
        "window_start": record.window_start,
        "backup": record.backup,
        "nodes": nodes,
        "atlas": write_atlas(record.nodes, out_dir),
    }
    (out_dir / "tree.json").write_text(json.dumps(document, indent=1))
    return document


def write_samples(batch: SampleBatch, out_dir: Path) -> None:
    """out_dir/sample-XXX.png and out_dir/samples.json with prompts and rewards."""
    out_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for i, prompt in enumerate(batch.prompts):
        rel = f"sample-{i:03d}.png"
        thumbnail(batch.images[i]).save(out_dir / rel)
        items.append(
            {
                "prompt": prompt,
                "image": rel,
                "rewards": {name: float(r[i]) for name, r in batch.rewards.items()},
            }
        )
    (out_dir / "samples.json").write_text(
        json.dumps({"epoch": batch.epoch, "samples": items}, indent=1)
    )
