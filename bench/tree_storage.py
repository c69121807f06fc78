"""Bytes a logged tree costs in the artifact store at SD3 sizes, by part: node images (the
stored <= 128 px PNG thumbnails), the atlas, and the node latents kept for "branch again".

    python bench/tree_storage.py [--quick]

A k=4, d=4 tree over 10 steps (1,367 recorded states, 598 drawn, 256 leaves) and a k=3, d=3
one (177 states), at 512^2 (SD3 latent 16x64x64) and 1024^2 (16x128x128). The images go
through the worker's own code (treegrpo.artifacts.thumbnail, treegrpo.atlas.build_atlas,
treegrpo.branch.save_latent), one node at a time, as a tiny model would produce them: noise
(the worst case for PNG, a random-init model's output) and smooth textured scenes (closer to a
trained model's). Latents: as the workers store them today (every state, float32), and the
bound the workers keep: only where a branch can start from the inspector (drawn, non-leaf
states: a leaf has no step left, a hidden ODE-chain state cannot be clicked), in float32 and in
bfloat16 (TREEGRPO_LATENT_DTYPE), each file written by save_latent and measured.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "frontend"))

from treegrpo.artifacts import thumbnail
from treegrpo.atlas import build_atlas, drawable
from treegrpo.branch import save_latent


def shape(
    k: int, depth: int, steps: int = 10, window: int = 2
) -> list[tuple[int, int | None, bool, bool]]:
    """(id, parent, has a log-prob, is a leaf) of a tree as treegrpo.tree_record lays it out."""
    nodes: list[tuple[int, int | None, bool, bool]] = [(0, None, False, False)]
    frontier = [0]
    for step in range(1, steps + 1):
        new = []
        for parent in frontier:
            sde = window < step <= window + depth
            for _ in range(k if sde else 1):
                nodes.append((len(nodes), parent, sde, step == steps))
                new.append(len(nodes) - 1)
        frontier = new
    return nodes


def image(kind: str, side: int, index: int) -> torch.Tensor:
    """(3, side, side) in [0, 1]."""
    rng = np.random.default_rng(index)
    if kind == "noise":
        return torch.from_numpy(rng.random((3, side, side), dtype=np.float32))
    from tree_images import scene

    small = scene(index % 48).resize((side, side), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(small, dtype=np.float32).transpose(2, 0, 1) / 255)


def measure(k: int, depth: int, side: int, kind: str, folder: Path) -> dict[str, float]:
    nodes = shape(k, depth)
    shown = drawable((i, p, sde) for i, p, sde, _ in nodes)
    latent_side = side // 8  # the SD3 VAE: 8x down, 16 channels
    sizes = {
        "images": 0,
        "atlas": 0,
        "latents_all_fp32": 0,
        "latents_branchable_fp32": 0,
        "latents_branchable_bf16": 0,
    }
    one_latent = 0
    stored_size: dict[str, int] = {}
    tiles = []
    for i, _parent, _sde, leaf in nodes:
        pil = thumbnail(image(kind, side, i))
        out = io.BytesIO()
        pil.save(out, format="PNG")
        sizes["images"] += len(out.getvalue())
        if i in shown:
            tiles.append((i, pil))
        if not one_latent:  # every latent of a tree has the same size, per stored dtype
            state = torch.randn(16, latent_side, latent_side)
            for dtype in ("float32", "bfloat16"):
                path = folder / f"latent-{i}-{dtype}.safetensors"
                save_latent(path, state, dtype)
                stored_size[dtype] = path.stat().st_size
                path.unlink()
            one_latent = stored_size["float32"]
        sizes["latents_all_fp32"] += one_latent
        if not leaf and i in shown:
            sizes["latents_branchable_fp32"] += one_latent
            sizes["latents_branchable_bf16"] += stored_size["bfloat16"]
    data, _ = build_atlas(tiles)
    sizes["atlas"] = len(data)
    sizes["states"] = len(nodes)
    sizes["drawn"] = len(shown)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the k=3, d=3 tree at 512^2 only")
    args = parser.parse_args()
    cases = [(3, 3, 512)] if args.quick else [(3, 3, 512), (4, 4, 512), (4, 4, 1024)]
    mb = 1e6
    print(
        "| tree | size | images | states | node PNGs | atlas | latents of every state, fp32 "
        "(before the bound) | bound: drawn non-leaf, fp32 | bound, bf16 | total with every "
        "state |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for k, depth, side in cases:
            for kind in ("noise", "scenes"):
                s = measure(k, depth, side, kind, Path(tmp))
                total = s["images"] + s["atlas"] + s["latents_all_fp32"]
                print(
                    f"| k={k}, d={depth} | {side}^2 | {kind} | {s['states']:.0f} "
                    f"({s['drawn']:.0f} drawn) | {s['images'] / mb:.1f} MB | "
                    f"{s['atlas'] / 1e3:.0f} KB | {s['latents_all_fp32'] / mb:.1f} MB | "
                    f"{s['latents_branchable_fp32'] / mb:.1f} MB | "
                    f"{s['latents_branchable_bf16'] / mb:.1f} MB | {total / mb:.1f} MB |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
