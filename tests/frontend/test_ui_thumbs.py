"""frontend/thumbs.py: shrinking, data: URIs, the per-key cache, fetch failures."""

from __future__ import annotations

import base64
import io

import httpx
from PIL import Image

from frontend.client import ApiClient
from frontend.thumbs import ThumbnailCache, shrink


def _png(size: int, mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (size, size), 128).save(out, format="PNG")
    return out.getvalue()


def _client(files: dict[str, bytes], calls: list[str], key: str | None = None) -> ApiClient:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        body = files.get(request.url.path)
        if body is None:
            return httpx.Response(404, json={"title": "Not Found", "status": 404})
        return httpx.Response(200, content=body, headers={"content-type": "image/png"})

    return ApiClient("http://api.test", api_key=key, transport=httpx.MockTransport(handler))


def test_small_images_pass_through_and_large_ones_shrink() -> None:
    small = _png(64)
    assert shrink(small, "image/png", 96) == (small, "image/png")
    data, kind = shrink(_png(1024, "RGB"), "image/png", 96) or (b"", "")
    assert kind == "image/jpeg"
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (96, 96)
    _, kind = shrink(_png(512), "image/png", 96) or (b"", "")
    assert kind == "image/png"
    assert shrink(b"not an image", "image/png", 96) is None


def test_cache_fetches_once_per_key_and_skips_missing_files() -> None:
    url = "/api/v1/artifacts/jobs/1/a.png"
    files = {url: _png(16)}
    calls: list[str] = []
    cache = ThumbnailCache()
    client = _client(files, calls)
    got = cache.many(client, [url, url, None, "/api/v1/artifacts/missing.png"], 96)
    assert list(got) == [url]
    assert got[url].startswith("data:image/png;base64,")
    assert base64.b64decode(got[url].split(",", 1)[1]) == files[url]
    cache.many(client, [url], 96)
    assert calls.count(url) == 1  # cached
    # A session with another key never gets the first one's bytes without asking the API.
    cache.many(_client(files, calls, key="other"), [url], 96)
    assert calls.count(url) == 2


def test_cache_evicts_least_recently_used() -> None:
    files = {f"/api/v1/artifacts/{i}.png": _png(16) for i in range(4)}
    calls: list[str] = []
    client = _client(files, calls)
    one = len(ThumbnailCache().fetch(client, "/api/v1/artifacts/0.png", 96) or "")
    cache = ThumbnailCache(max_bytes=2 * one)
    for i in range(3):
        cache.fetch(client, f"/api/v1/artifacts/{i}.png", 96)
    assert cache.get(client, "/api/v1/artifacts/0.png", 96) is None
    assert cache.get(client, "/api/v1/artifacts/2.png", 96) is not None
