"""treegrpo/atlas.py: which nodes get a tile, the tile size and format by tree size and image
kind, and the atlas write_tree leaves beside a logged tree."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from PIL import Image

from treegrpo.artifacts import write_tree
from treegrpo.atlas import SMALL_TILES_ABOVE, build_atlas, drawable, native_side
from treegrpo.tree_record import TreeNodeRecord, TreeRecord


def test_drawable_leaves_out_ode_chain_states_only() -> None:
    # 0 root -> 1 chain -> 2 (two children) -> 3 (SDE) -> 4 chain -> 5 leaf; 2 -> 6 leaf;
    # 7 has a parent outside the rows (a branch's first node): drawn like a root.
    rows = [
        (0, None, False),
        (1, 0, False),
        (2, 1, False),
        (3, 2, True),
        (4, 3, False),
        (5, 4, False),
        (6, 2, False),
        (7, 99, False),
        (8, 7, False),
    ]
    assert drawable(rows) == {0, 2, 3, 5, 6, 7, 8}


def test_colour_tiles_are_48_px_jpeg_and_24_px_past_the_limit() -> None:
    red = Image.new("RGB", (128, 128), (200, 30, 40))
    data, index = build_atlas([(i, red) for i in range(5)])
    assert index["format"] == "jpeg" and index["tile"] == 48 and index["columns"] == 3
    assert index["slots"] == {str(i): i for i in range(5)}
    sheet = Image.open(io.BytesIO(data))
    assert sheet.format == "JPEG" and sheet.size == (3 * 48, 2 * 48)
    many = [(i, red) for i in range(SMALL_TILES_ABOVE + 1)]
    _, big = build_atlas(many)
    assert big["tile"] == 24 and big["columns"] == 39  # ceil(sqrt(1501))


def test_small_greyscale_images_go_as_png_at_native_size() -> None:
    digit = Image.new("L", (16, 16), 0)
    digit.putpixel((3, 5), 255)
    stored = digit.resize((64, 64), Image.Resampling.NEAREST)  # what thumbnail() keeps
    assert native_side(stored).tobytes() == digit.tobytes()
    data, index = build_atlas([(0, stored), (1, digit)])
    assert index["format"] == "png" and index["tile"] == 16
    sheet = Image.open(io.BytesIO(data))
    assert sheet.format == "PNG" and sheet.mode == "L"
    assert sheet.getpixel((3, 5)) == 255 and sheet.getpixel((16 + 3, 5)) == 255
    assert sheet.getpixel((4, 5)) == 0  # pixel-exact, not blurred


def test_write_tree_writes_the_atlas_of_the_drawn_nodes(tmp_path: Path) -> None:
    def node(i: int, parent: int | None, log_prob: float | None, leaf: bool) -> TreeNodeRecord:
        image = torch.zeros(3, 32, 32)
        image[0] = i / 4  # red channel tells the nodes apart
        return TreeNodeRecord(
            id=i,
            parent_id=parent,
            step_index=i,
            depth=i,
            t=1.0,
            sigma=1.0,
            is_leaf=leaf,
            log_prob=log_prob,
            reward=None,
            advantage=None,
            image=image,
        )

    # root 0 -> 1 (chain) -> 2 (SDE) -> 3 leaf
    nodes = [node(0, None, None, False), node(1, 0, None, False), node(2, 1, -1.0, False)]
    nodes.append(node(3, 2, None, True))
    record = TreeRecord(0, "p", 1, 1, 4, 1, "mean", nodes)
    document = write_tree(record, tmp_path)
    assert document["atlas"] == "atlas.jpg"
    index = json.loads((tmp_path / "atlas.json").read_text())
    assert set(index["slots"]) == {"0", "2", "3"} and index["image"] == "atlas.jpg"
    sheet = Image.open(tmp_path / "atlas.jpg").convert("RGB")
    slot = index["slots"]["2"]
    x = (slot % index["columns"]) * index["tile"] + 24
    y = (slot // index["columns"]) * index["tile"] + 24
    assert abs(sheet.getpixel((x, y))[0] - 128) <= 4  # node 2's red 0.5
