"""Request and answer bodies of the reward server: PNG-in-JSON (default) or msgpack raw arrays.

JSON request (the `remote` client's default):

    {"prompts": ["a cat", ...], "images": ["<base64 PNG>", ...]}

Either may carry `"metadata": [{...}, ...]`: one JSON object per image, its prompt's dataset row
(treegrpo/datasets/); absent (older clients) means `{}` for every image.

msgpack request (Content-Type: application/msgpack), images as raw 8-bit arrays:

    {"prompts": [...], "images": [{"shape": [C, H, W], "dtype": "uint8", "data": <bytes>}, ...]}

Answer (JSON, or msgpack when the request's Accept names application/msgpack), always 200 once
the request itself is well formed; an item that cannot be scored has a null score and an error:

    {"scores": [0.71, null, ...], "errors": [null, "image 1: not a PNG (...)", ...]}

Each image is decoded on its own, so one corrupt or oversized image fails only its own item.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

JSON = "application/json"
MSGPACK = "application/msgpack"
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")


class BadRequest(ValueError):
    """The request as a whole is malformed (not an item's problem): answered 400."""


class TooLarge(BadRequest):
    """More images in one request than the server takes: answered 413."""


@dataclass
class Item:
    """One image to score: its prompt and pixels (C, H, W) in [0, 1], or why it cannot be."""

    prompt: str
    image: Tensor | None
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def is_msgpack(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() in MSGPACK_TYPES


def wants_msgpack(accept: str | None) -> bool:
    return any(is_msgpack(part) for part in (accept or "").split(","))


def _pixels(array: np.ndarray) -> Tensor:
    """(H, W) or (H, W, C) uint8 -> (C, H, W) float32 in [0, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(array)).float() / 255.0
    if tensor.ndim == 2:
        return tensor[None]  # (1, H, W)
    return tensor.permute(2, 0, 1).contiguous()  # (C, H, W)


def _check_size(index: int, height: int, width: int, max_pixels: int) -> str | None:
    if height * width > max_pixels:
        return f"image {index}: {width} x {height} pixels is over the limit of {max_pixels}"
    return None


def _png(index: int, text: Any, max_pixels: int) -> tuple[Tensor | None, str | None]:
    if not isinstance(text, str):
        return None, f"image {index}: expected a base64 PNG string, got {type(text).__name__}"
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        return None, f"image {index}: not base64 ({exc})"
    try:
        image: Image.Image = Image.open(io.BytesIO(raw))
        if image.format != "PNG":
            return None, f"image {index}: not a PNG (a {image.format} file)"
        error = _check_size(index, image.height, image.width, max_pixels)
        if error:
            return None, error
        image.load()
    except Exception as exc:  # PIL raises many kinds for a corrupt file
        return None, f"image {index}: not a PNG ({type(exc).__name__}: {exc})"
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    return _pixels(np.asarray(image)), None


def _raw(index: int, value: Any, max_pixels: int) -> tuple[Tensor | None, str | None]:
    if not isinstance(value, dict):
        return None, f"image {index}: expected {{shape, dtype, data}}, got {type(value).__name__}"
    shape, dtype, data = value.get("shape"), value.get("dtype"), value.get("data")
    if dtype != "uint8":
        return None, f"image {index}: dtype {dtype!r} is not supported (uint8 only)"
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or not all(isinstance(n, int) and n > 0 for n in shape)
        or shape[0] not in (1, 3)
    ):
        return None, f"image {index}: shape {shape!r} is not [C in (1, 3), H, W]"
    error = _check_size(index, shape[1], shape[2], max_pixels)
    if error:
        return None, error
    if not isinstance(data, bytes) or len(data) != shape[0] * shape[1] * shape[2]:
        size = len(data) if isinstance(data, bytes) else type(data).__name__
        return None, f"image {index}: data of {size} bytes does not match shape {shape}"
    array = np.frombuffer(data, dtype=np.uint8).reshape(shape)  # (C, H, W)
    return torch.from_numpy(array.copy()).float() / 255.0, None


def decode_request(
    body: bytes, content_type: str | None, max_items: int, max_pixels: int
) -> list[Item]:
    """The items of a request body. Raises BadRequest for a body that is not a request at all;
    a bad image is an item with an error."""
    binary = is_msgpack(content_type)
    try:
        if binary:
            import msgpack

            payload = msgpack.unpackb(body, raw=False)
        else:
            import json

            payload = json.loads(body)
    except Exception as exc:
        kind = "msgpack" if binary else "JSON"
        raise BadRequest(f"the body is not valid {kind}: {exc}") from exc
    if not isinstance(payload, dict):
        raise BadRequest("the body must be an object with 'prompts' and 'images'")
    prompts, images = payload.get("prompts"), payload.get("images")
    if not isinstance(prompts, list) or not isinstance(images, list):
        raise BadRequest("'prompts' and 'images' must both be lists")
    if len(prompts) != len(images):
        raise BadRequest(f"{len(prompts)} prompts for {len(images)} images")
    if len(images) > max_items:
        raise TooLarge(f"{len(images)} images in one request; the limit is {max_items}")
    metadata = payload.get("metadata")
    if metadata is None:
        metadata = [{} for _ in images]
    if not isinstance(metadata, list) or len(metadata) != len(images):
        raise BadRequest("'metadata', when given, must be a list of one object per image")
    items = []
    for index, (prompt, value, row) in enumerate(zip(prompts, images, metadata, strict=True)):
        if not isinstance(prompt, str):
            items.append(Item(str(prompt), None, f"image {index}: the prompt is not a string"))
            continue
        if not isinstance(row, dict):
            items.append(Item(prompt, None, f"image {index}: its metadata is not an object"))
            continue
        image, error = (_raw if binary else _png)(index, value, max_pixels)
        items.append(Item(prompt, image, error, row))
    return items


def encode_answer(
    scores: list[float | None], errors: list[str | None], binary: bool
) -> tuple[bytes, str]:
    payload = {"scores": scores, "errors": errors}
    if binary:
        import msgpack

        return msgpack.packb(payload), MSGPACK
    import json

    return json.dumps(payload).encode(), JSON
