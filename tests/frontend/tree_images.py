"""Real-looking node images for seeded trees: 128 px textured colour scenes (a sky gradient, a
sun, noisy hills; what an SD-family model's thumbnails look like to a PNG encoder and to the
eye), or 16 px greyscale digit-like strokes (the digits model). A palette of a few dozen is
made once and reused, so seeding a 4,096-leaf tree's ~9,600 drawn nodes stays quick."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from PIL import Image

PALETTE = 48


@lru_cache(maxsize=PALETTE * 2)
def scene(index: int, size: int = 128) -> Image.Image:
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:size, 0:size] / size
    top, bottom, ground = (rng.uniform(0, 255, 3) for _ in range(3))
    sky = top[None, None, :] * (1 - y[..., None]) + bottom[None, None, :] * y[..., None]
    phase, freq, level = rng.uniform(0, 6.3), rng.uniform(4, 12), rng.uniform(0.45, 0.7)
    hill = y > level + 0.08 * np.sin(x * freq + phase)
    noise = rng.normal(1.0, 0.12, (size, size, 1))
    shade = (0.7 + 0.3 * (1 - y))[..., None]
    image = np.where(hill[..., None], ground[None, None, :] * noise * shade, sky)
    cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.35), rng.uniform(0.06, 0.12)
    sun = (x - cx) ** 2 + (y - cy) ** 2 < r * r
    image[sun & ~hill] = (255, 236, 160)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="RGB")


@lru_cache(maxsize=PALETTE * 2)
def digit(index: int) -> Image.Image:
    rng = np.random.default_rng(1000 + index)
    canvas = np.zeros((16, 16), dtype=np.float64)
    px, py = rng.uniform(4, 12, 2)
    for _ in range(18):  # a random stroke
        px = float(np.clip(px + rng.normal(0, 1.2), 2, 13))
        py = float(np.clip(py + rng.normal(0, 1.2), 2, 13))
        canvas[int(py) : int(py) + 2, int(px) : int(px) + 2] = 1.0
    return Image.fromarray((canvas * 255).astype(np.uint8), mode="L")


def node_image(kind: str, node_index: int) -> Image.Image:
    """`kind` "colour" (128 px scenes), "digits" (16 px greyscale) or "flat" (16 px squares)."""
    if kind == "colour":
        return scene(node_index % PALETTE)
    if kind == "digits":
        return digit(node_index % PALETTE)
    return Image.new("L", (16, 16), int(255 * (node_index % 97) / 96))


@lru_cache(maxsize=PALETTE * 3 + 100)
def _png(kind: str, key: int) -> bytes:
    out = io.BytesIO()
    node_image(kind, key).save(out, format="PNG")
    return out.getvalue()


def node_png(kind: str, node_index: int) -> bytes:
    return _png(kind, node_index % (PALETTE if kind != "flat" else 97))
