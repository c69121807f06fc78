"""Thumbnails inlined as data: URIs, fetched once through the API client and kept in memory.

Why not let the browser load /api/v1/artifacts/... itself: a 27-leaf tree shows ~68 images, and
68 separate requests to the API's artifact route took 0.4-0.7 s on a 2-core machine (each goes
through the API's dependencies), more than the whole render budget (< 1 s). Fetched here over
one keep-alive connection they take ~3 ms each, once: artifacts never change, so a small LRU
keeps them. It also makes images work where the browser cannot fetch them itself: with
TREEGRPO_READS_REQUIRE_KEY (the fetch carries the user's key), behind a path prefix, or with the
UI served from another origin. Large images (SD-size) are shrunk to `max_px` on the longest side
first, so pages stay small; the full-size file stays one click away (artifact_href).
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, UnidentifiedImageError

from frontend.client import ApiClient, ApiError

TREE_PX = 96  # tree nodes are drawn at <= 44 px: 2x for sharp high-DPI screens
PANEL_PX = 352
GALLERY_PX = 160
MAX_CACHE_BYTES = 48 * 1024 * 1024
FETCH_THREADS = 4


def shrink(data: bytes, content_type: str, max_px: int) -> tuple[bytes, str] | None:
    """The image re-encoded at most `max_px` on its longest side (PNG for grey/alpha and small
    images, JPEG for large colour ones); small images pass through. None: not an image."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            if max(opened.size) <= max_px and content_type in ("image/png", "image/jpeg"):
                return data, content_type
            image: Image.Image = opened.copy()
        image.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        if image.mode in ("RGB", "CMYK", "YCbCr") and max(image.size) > 64:
            image.convert("RGB").save(out, format="JPEG", quality=85, optimize=True)
            return out.getvalue(), "image/jpeg"
        if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
            image = image.convert("RGBA")
        image.save(out, format="PNG", optimize=True)
        return out.getvalue(), "image/png"
    except (UnidentifiedImageError, OSError, ValueError):
        return None


class ThumbnailCache:
    """data: URIs of artifact images by (API, URL, size, key), least recently used out first."""

    def __init__(self, max_bytes: int = MAX_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str, int, str], str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def _key(self, client: ApiClient, url: str, max_px: int) -> tuple[str, str, int, str]:
        # Images fetched with one key are never handed to a session with another (or none).
        who = hashlib.sha256((client.api_key or "").encode()).hexdigest()[:16]
        return (client.base_url, url, max_px, who)

    def get(self, client: ApiClient, url: str, max_px: int) -> str | None:
        with self._lock:
            key = self._key(client, url, max_px)
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def _put(self, key: tuple[str, str, int, str], uri: str) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = uri
            self._bytes += len(uri)
            while self._bytes > self.max_bytes and self._items:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old)

    def fetch(self, client: ApiClient, url: str, max_px: int) -> str | None:
        """The data: URI of `url`, from the cache or the API (None when it cannot be had)."""
        found = self.get(client, url, max_px)
        if found is not None:
            return found
        try:
            data, content_type = client.artifact(url)
        except ApiError:
            return None
        small = shrink(data, content_type.split(";")[0].strip().lower(), max_px)
        if small is None:
            return None
        uri = f"data:{small[1]};base64,{base64.b64encode(small[0]).decode('ascii')}"
        self._put(self._key(client, url, max_px), uri)
        return uri

    def cached(self, client: ApiClient, urls: Iterable[str | None], max_px: int) -> dict[str, str]:
        """url -> data: URI of the URLs already in the cache (no request)."""
        out: dict[str, str] = {}
        for url in dict.fromkeys(u for u in urls if u):
            hit = self.get(client, url, max_px)
            if hit is not None:
                out[url] = hit
        return out

    def many(self, client: ApiClient, urls: Iterable[str | None], max_px: int) -> dict[str, str]:
        """url -> data: URI for every URL that could be had (misses fetched in parallel)."""
        wanted = list(dict.fromkeys(u for u in urls if u))
        out: dict[str, str] = {}
        missing = []
        for url in wanted:
            hit = self.get(client, url, max_px)
            if hit is None:
                missing.append(url)
            else:
                out[url] = hit
        if missing:
            with ThreadPoolExecutor(min(FETCH_THREADS, len(missing))) as pool:
                for url, uri in zip(
                    missing, pool.map(lambda u: self.fetch(client, u, max_px), missing), strict=True
                ):
                    if uri is not None:
                        out[url] = uri
        return out
