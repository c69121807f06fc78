"""Image sizes a model can sample at (`sampling.height` / `sampling.width`).

A latent is the image divided by the VAE's scale factor, and a DiT cuts it into patches (FLUX packs
2x2), so a valid side is a multiple of `vae_scale * patch`. Some models also cap it (SD3's position
table covers `pos_embed_max_size` patches). A wrong size is a ConfigError that names the nearest
valid size, before any weights are touched.

The module is torch-free, so the API applies the same rule at submit (`check_requested_size`):
the built-in models' one size, and a local folder's rule read from its config files
(model_index.json, the denoiser's and the VAE's config.json), as the loaders read them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from treegrpo.errors import ConfigError

# Image side (pixels) of the built-in models, which sample at that size only.
BUILTIN_SIZES = {"tiny-random": 8, "tiny-random-ddim": 8, "digits": 16, "digits-ddim": 16}
FLUX_DEFAULT_LATENT = 128  # FluxPipeline.default_sample_size: 1024 px with an 8x VAE


def nearest_valid(value: int, multiple: int, maximum: int | None = None) -> list[int]:
    """The valid sizes closest to `value`: one if it lies on a multiple's midpoint side, else
    the two neighbours (ties keep both), all within [multiple, maximum]."""
    below = max(multiple, (value // multiple) * multiple)
    above = below if below >= value else below + multiple
    if maximum is not None:
        top = (maximum // multiple) * multiple
        below, above = min(below, top), min(above, top)
    options = sorted({below, above}, key=lambda size: (abs(size - value), size))
    if len(options) == 2 and abs(options[0] - value) != abs(options[1] - value):
        options = options[:1]
    return sorted(options)


def checked_side(
    field: str, value: int, multiple: int, why: str, maximum: int | None = None
) -> int:
    """`value` if it is a positive multiple of `multiple` (and <= maximum), else a ConfigError
    naming the nearest valid size; `why` says where the multiple comes from."""
    if value >= multiple and value % multiple == 0 and (maximum is None or value <= maximum):
        return value
    nearest = " or ".join(str(size) for size in nearest_valid(value, multiple, maximum))
    if maximum is not None and value > maximum:
        reason = f"{value} is larger than this model's maximum {maximum} ({why})"
    else:
        reason = f"{value} is not a positive multiple of {multiple} ({why})"
    raise ConfigError(field, f"{reason}; the nearest valid size is {nearest}")


def image_size(
    requested: tuple[int | None, int | None],
    default: tuple[int, int],
    multiple: int,
    why: str,
    maximum: int | None = None,
) -> tuple[int, int]:
    """(height, width) in pixels: the requested sides (one given alone makes a square), else the
    model's default, each checked against `multiple` and `maximum`."""
    height, width = requested
    if height is None and width is None:
        height, width = default
    elif height is None:
        height = width
    elif width is None:
        width = height
    assert height is not None and width is not None
    return (
        checked_side("sampling.height", height, multiple, why, maximum),
        checked_side("sampling.width", width, multiple, why, maximum),
    )


def fixed_size(name: str, requested: tuple[int | None, int | None], native: int) -> None:
    """Built-in models sample at one size only: anything else is a ConfigError."""
    for field, value in zip(("sampling.height", "sampling.width"), requested, strict=True):
        if value is not None and value != native:
            raise ConfigError(
                field, f"model {name!r} samples at {native}x{native} only, got {value}"
            )


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _side(sample_size: Any) -> tuple[int, int]:
    if isinstance(sample_size, int):
        return sample_size, sample_size
    height, width = sample_size
    return int(height), int(width)


def folder_rule(folder: Path) -> tuple[tuple[int, int], int, str, int | None] | None:
    """(default size, multiple, why, maximum) of a local pipeline folder, read from its config
    files as the loaders (treegrpo/models/local.py) read them; None when the files are missing
    or unreadable (the loader then says what is wrong)."""
    index, vae = _json(folder / "model_index.json"), _json(folder / "vae" / "config.json")
    if index is None or vae is None:
        return None
    scale = int(2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1))
    pipeline = index.get("_class_name")
    try:
        if pipeline == "StableDiffusion3Pipeline":
            dit = _json(folder / "transformer" / "config.json")
            if dit is None:
                return None
            patch, (height, width) = int(dit["patch_size"]), _side(dit["sample_size"])
            positions = dit.get("pos_embed_max_size")
            maximum = None if positions is None else int(positions) * patch * scale
            why = f"the VAE's {scale}x times the transformer's {patch}x{patch} patches"
            return (height * scale, width * scale), scale * patch, why, maximum
        if pipeline == "FluxPipeline":
            default = FLUX_DEFAULT_LATENT * scale
            return (
                (default, default),
                scale * 2,
                f"the VAE's {scale}x times FLUX's 2x2 packing",
                None,
            )
        if pipeline == "StableDiffusionPipeline":
            unet = _json(folder / "unet" / "config.json")
            if unet is None:
                return None
            height, width = _side(unet["sample_size"])
            return (height * scale, width * scale), scale, f"the VAE's {scale}x", None
    except (KeyError, TypeError, ValueError):
        return None
    return None


def check_requested_size(
    model: str, requested: tuple[int | None, int | None], folder: Path | None
) -> None:
    """The size rule of `model` (a built-in name, or the local `folder` it resolved to) for the
    requested (sampling.height, sampling.width): a ConfigError naming the field, or nothing
    when the size is valid or the rule cannot be read here."""
    if requested == (None, None):
        return
    native = BUILTIN_SIZES.get(model)
    if native is not None:
        fixed_size(model, requested, native)
        return
    rule = folder_rule(folder) if folder is not None else None
    if rule is not None:
        default, multiple, why, maximum = rule
        image_size(requested, default, multiple, why, maximum)
