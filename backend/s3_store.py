"""The artifact store in an S3-compatible bucket (AWS S3, MinIO, R2, GCS's S3 API), through
obstore (Rust's object_store; chosen over boto3 by measurement, bench/s3_clients.py in
docs/BENCHMARKS.md: a third of the wall time and a fifth of the CPU per small upload, a quarter
of the import time, the same on a big multipart upload; presigned URLs built in).

    TREEGRPO_ARTIFACT_URL=s3://bucket/prefix     the bucket, and a prefix inside it (optional)
    TREEGRPO_S3_ENDPOINT_URL=http://minio:9000   anything but AWS itself
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION / AWS_DEFAULT_REGION, AWS_SESSION_TOKEN

Credentials come from the standard AWS variables (obstore reads them), never from our settings.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import S3Store as _Bucket

from backend.artifact_store import CHUNK, ArtifactStore, check_key

if TYPE_CHECKING:  # typed dicts of obstore's stubs, not importable at run time
    from obstore.store import ClientConfig, S3Config

# Files above this go up in parts of this size (S3's smallest part is 5 MiB), several at once.
PART_BYTES = 8 << 20


def parse_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix")."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"TREEGRPO_ARTIFACT_URL must look like s3://bucket/prefix, got {url!r}")
    return parsed.netloc, parsed.path.strip("/")


class S3Store(ArtifactStore):
    remote = True

    def __init__(self, url: str, endpoint: str | None = None) -> None:
        bucket, prefix = parse_url(url)
        options: ClientConfig = {}
        config: S3Config = {}
        if endpoint:
            config["endpoint"] = endpoint
            # MinIO and most S3-compatible servers want path-style requests.
            config["virtual_hosted_style_request"] = False
            options["allow_http"] = endpoint.startswith("http://")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            config["region"] = region
        self.url = url
        self.bucket = _Bucket(
            bucket, prefix=prefix or None, config=config or None, client_options=options or None
        )

    def size(self, key: str) -> int | None:
        try:
            return int(obstore.head(self.bucket, check_key(key))["size"])
        except (FileNotFoundError, NotFoundError):
            return None

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        size = self.size(key)
        if size is None or offset >= size:
            return b""
        end = min(size, offset + length)
        return bytes(obstore.get_range(self.bucket, check_key(key), start=offset, end=end))

    def stream(self, key: str) -> Iterator[bytes]:
        result = obstore.get(self.bucket, check_key(key))
        for block in result.stream(min_chunk_size=CHUNK):
            yield bytes(block)

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        for batch in obstore.list(self.bucket, check_key(prefix.rstrip("/")) + "/"):
            found.extend(str(meta["path"]) for meta in batch)
        return sorted(found)

    def put_file(self, key: str, path: Path) -> None:
        # Above PART_BYTES obstore makes a multipart upload, completed only when every part is
        # in: a crash before that leaves no object (only parts S3 lifecycle rules clean up).
        obstore.put(self.bucket, check_key(key), path, chunk_size=PART_BYTES)

    def download(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        with partial.open("wb") as handle:
            for block in self.stream(key):
                handle.write(block)
        partial.replace(path)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.keys(prefix)
        for start in range(0, len(keys), 1000):
            obstore.delete(self.bucket, keys[start : start + 1000])
        return len(keys)

    def signed_url(self, key: str, seconds: int) -> str | None:
        return str(obstore.sign(self.bucket, "GET", check_key(key), timedelta(seconds=seconds)))
