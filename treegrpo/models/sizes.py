"""Image sizes a model can sample at (`sampling.height` / `sampling.width`).

A latent is the image divided by the VAE's scale factor, and a DiT cuts it into patches (FLUX packs
2x2), so a valid side is a multiple of `vae_scale * patch`. Some models also cap it (SD3's position
table covers `pos_embed_max_size` patches). A wrong size is a ConfigError that names the nearest
valid size, before any weights are touched.
"""

from __future__ import annotations

from treegrpo.config import ConfigError


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
