"""remote: score images on the user's own reward server over HTTP (a batched JSON client).

The pattern of DDPO's LLaVA rewards (kvablack/ddpo-pytorch `rewards.py`, `llava_strict_satisfaction`
/ `llava_bertscore`): the reward model runs in its own process or on its own machine, and the
trainer sends it images and prompts in batches. The protocol here is plain JSON:

    POST <url>   {"prompts": ["a cat", ...], "images": ["<base64 PNG>", ...]}
    200          {"scores": [0.73, ...]}          # one finite number per image, higher is better
    200          {"scores": [0.73, null], "errors": [null, "image 1: not a PNG (...)"]}

With prompts from a dataset whose rows carry metadata (treegrpo/datasets/), the body also holds
`"metadata": [{...}, ...]`, one JSON object per image (GenEval's clauses, the digit, ...); it is
left out when every row is empty, so servers that predate the field keep working.
PNGs are 8-bit, greyscale for 1-channel images and RGB for 3-channel ones. With `format: msgpack`
the body is msgpack instead (Content-Type and Accept: application/msgpack) and each image a raw
array `{"shape": [C, H, W], "dtype": "uint8", "data": <bytes>}`: no PNG encoding on either side.
`treegrpo reward-serve` (package `rewardserve`) is a server for this protocol. An item the server
could not score (an entry in `errors`, or a null score) fails the run with a message naming its
prompt: it is never replaced by a 0.

Options (`reward_options.remote`): `url` (required, http:// or https://), `timeout` (seconds per
request, default 30), `retries` (extra attempts after a timeout, connection error or HTTP 5xx,
default 2), `backoff` (seconds before the first retry, doubling after each, default 0.5),
`batch_size` (images per request, default 16), `format` (`png`, the default, or `msgpack`).
The bearer key (`Authorization: Bearer <key>`) is never a config value: the config names it with
`api_key_env: NAME` (the worker's environment variable NAME) or `api_key_secret: NAME` (the
server-side secret store), and the caller resolves the reference (`secrets.resolve_options`) into
the `api_key` the factory receives. A 4xx answer or a malformed response is not retried: it fails
at once with a RuntimeError that names the server and says what was wrong. In a studio worker
(an outbound rule installed: treegrpo/egress.py) each attempt first resolves the host and checks
every address, then connects to the checked address: a refusal raises EgressRefused, unretried.

    fn = REWARDS["remote"](torch.device("cpu"), {"url": "http://127.0.0.1:8000/score"})
    scores = fn(images, prompts, metadata)  # (B,) float32; metadata: one dict per image
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import torch
from torch import Tensor

from treegrpo.config import ConfigError, _float, _int, _text
from treegrpo.egress import pinned_target
from treegrpo.rewards.jpeg import to_pil_images
from treegrpo.rewards.signature import Metadata, RewardFn

# `api_key` is what a resolved `api_key_env` / `api_key_secret` becomes; a config may not hold it.
OPTIONS = ("url", "timeout", "retries", "backoff", "batch_size", "format", "api_key")
FORMATS = ("png", "msgpack")
MSGPACK = "application/msgpack"
SNIPPET_CHARS = 200


def _url(field: str, value: Any) -> str:
    if value is None:
        raise ConfigError(
            field, "missing: give the reward server's URL, e.g. http://host:8000/score"
        )
    url = _text(field, value, max_chars=2048).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(field, f"expected an http:// or https:// URL with a host, got {url!r}")
    return url


def _shown(url: str) -> str:
    """The URL for messages, without any user:password@ part."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[:SNIPPET_CHARS] + "..."


def encode_png(images: Tensor) -> list[str]:
    """(B, C, H, W) in [0, 1] -> B base64 strings of 8-bit PNGs."""
    out = []
    for image in to_pil_images(images):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return out


def encode_raw(images: Tensor) -> list[dict[str, Any]]:
    """(B, C, H, W) in [0, 1] -> B raw 8-bit arrays for the msgpack body."""
    pixels = (images.detach().float() * 255).round().clamp(0, 255).to(torch.uint8).cpu()
    return [
        {"shape": list(image.shape), "dtype": "uint8", "data": image.contiguous().numpy().tobytes()}
        for image in pixels
    ]


def parse_scores(
    where: str, payload: Any, expected: int, prompts: Sequence[str] | None = None
) -> list[float]:
    """The `scores` of a decoded response, checked: a list of `expected` finite numbers.

    An item the server reports in `errors` (or answers null for) raises, naming its prompt.
    """
    if not isinstance(payload, dict) or "scores" not in payload:
        got = f"an object with keys {sorted(payload)[:5]}" if isinstance(payload, dict) else ""
        got = got or type(payload).__name__
        raise RuntimeError(f"{where} returned JSON without a 'scores' list (got {got})")
    scores = payload["scores"]
    if not isinstance(scores, list):
        raise RuntimeError(f"{where} returned 'scores' as {type(scores).__name__}, expected a list")
    if len(scores) != expected:
        raise RuntimeError(f"{where} returned {len(scores)} scores for {expected} images")
    errors = payload.get("errors")
    if errors is not None and (not isinstance(errors, list) or len(errors) != expected):
        raise RuntimeError(f"{where} returned 'errors' that is not a list of {expected} entries")
    for i, score in enumerate(scores):
        error = errors[i] if errors is not None else None
        if error is not None or score is None:
            prompt = f" (prompt {prompts[i]!r})" if prompts is not None else ""
            reason = error if error is not None else "a null score and no error"
            raise RuntimeError(
                f"{where} could not score image {i}{prompt}: {_snippet(str(reason))}"
            )
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise RuntimeError(f"{where} returned scores[{i}] = {score!r}, not a number")
        if not math.isfinite(score):
            raise RuntimeError(f"{where} returned scores[{i}] = {score}, not a finite number")
    return [float(score) for score in scores]


def remote_factory(device: torch.device, options: Mapping[str, Any]) -> RewardFn:
    """Registry factory for `remote`: checks the options; makes no request until called."""
    for key in options:
        if key not in OPTIONS:
            raise ConfigError(
                f"reward_options.remote.{key}", f"unknown option; known: {', '.join(OPTIONS)}"
            )
    url = _url("reward_options.remote.url", options.get("url"))
    timeout = _float(
        "reward_options.remote.timeout", options.get("timeout", 30.0), lo=0, lo_open=True
    )
    retries = _int("reward_options.remote.retries", options.get("retries", 2), lo=0, hi=10)
    backoff = _float("reward_options.remote.backoff", options.get("backoff", 0.5), lo=0, hi=60)
    batch_size = _int("reward_options.remote.batch_size", options.get("batch_size", 16), lo=1)
    wire = options.get("format", "png")
    if wire not in FORMATS:
        raise ConfigError(
            "reward_options.remote.format", f"expected one of {FORMATS}, got {wire!r}"
        )
    binary = wire == "msgpack"
    if binary:
        import msgpack
    kind = MSGPACK if binary else "application/json"
    headers = {"Content-Type": kind, "Accept": kind}
    if options.get("api_key") is not None:
        api_key = _text("reward_options.remote.api_key", options["api_key"], max_chars=2048)
        headers["Authorization"] = f"Bearer {api_key}"

    import httpx  # only when the remote reward is used

    client = httpx.Client(timeout=timeout, headers=headers)
    where = f"remote reward at {_shown(url)}"
    attempts = retries + 1

    def post(prompts: list[str], images: list[Any], metadata: list[dict[str, Any]]) -> list[float]:
        body: dict[str, Any] = {"prompts": prompts, "images": images}
        if any(metadata):
            # Only when some prompt has metadata: a server from before the field never sees it.
            body["metadata"] = metadata
        content = msgpack.packb(body) if binary else json.dumps(body).encode()
        failure = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))  # exponential backoff
            # Under a studio worker's outbound rule the name is resolved and checked on every
            # attempt, and the request goes to that checked address (no second DNS answer).
            target, pin_headers, extensions = pinned_target(url, where)
            try:
                response = client.post(
                    target, content=content, headers=pin_headers, extensions=extensions
                )
            except httpx.TimeoutException:
                failure = f"{where} timed out after {attempts} attempts (timeout {timeout:g} s)"
                continue
            except httpx.TransportError as exc:
                failure = f"{where} could not be reached after {attempts} attempts: {exc!r}"
                continue
            status = response.status_code
            if status >= 500:
                failure = (
                    f"{where} answered HTTP {status} after {attempts} attempts: "
                    f"{_snippet(response.text)}"
                )
                continue
            if not 200 <= status < 300:
                raise RuntimeError(f"{where} answered HTTP {status}: {_snippet(response.text)}")
            answered_msgpack = response.headers.get("content-type", "").startswith(MSGPACK)
            try:
                if answered_msgpack:
                    payload = msgpack.unpackb(response.content, raw=False)
                else:
                    payload = response.json()
            except ValueError as exc:
                kind = "msgpack" if answered_msgpack else "JSON"
                raise RuntimeError(
                    f"{where} returned malformed {kind} ({exc}): {_snippet(response.text)}"
                ) from exc
            return parse_scores(where, payload, len(prompts), prompts)
        raise RuntimeError(failure)

    def remote(images: Tensor, prompts: Sequence[str], metadata: Metadata = ()) -> Tensor:
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts")
        rows = [dict(row) for row in metadata] if metadata else [{} for _ in prompts]
        if len(rows) != len(prompts):
            raise ValueError(f"got {len(rows)} metadata rows for {len(prompts)} prompts")
        scores: list[float] = []
        for start in range(0, len(prompts), batch_size):
            stop = start + batch_size
            encode = encode_raw if binary else encode_png
            scores += post(list(prompts[start:stop]), encode(images[start:stop]), rows[start:stop])
        return torch.tensor(scores, dtype=torch.float32)

    remote.remote = True  # type: ignore[attr-defined]  # the trainer overlaps remote scoring
    return remote
