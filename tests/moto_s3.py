"""A real S3 API for tests: moto's server mode (`moto_server`, a dev dependency) started as a
subprocess on a free loopback port. Not an in-process mock: requests go over HTTP, signed, as
they would to AWS or MinIO.

    with moto_server(folder) as endpoint:
        make_bucket(endpoint, "artifacts")
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

# Credentials moto accepts; set so that no client looks further (an instance metadata service).
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def moto_server(folder: Path) -> Iterator[str]:
    """An S3 endpoint URL, served until the block ends."""
    port = _free_port()
    binary = Path(sys.executable).with_name("moto_server")
    log = (folder / f"moto-{port}.log").open("wb")
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start: {(folder / log.name).name}")
            time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        log.close()


def make_bucket(endpoint: str, name: str | None = None) -> str:
    """A new, empty bucket (moto takes an unsigned CreateBucket); returns its name."""
    name = name or f"treegrpo-{uuid.uuid4().hex[:12]}"
    answer = httpx.put(f"{endpoint}/{name}", timeout=10)
    answer.raise_for_status()
    return name
