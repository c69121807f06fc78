"""Which S3 client the artifact store uses: obstore against boto3, on the same S3 API.

Starts moto's S3 server (a dev dependency, which brings boto3 along) on a free loopback port and
times, for each client: importing it and making a client, 100 small object uploads (2 KB, a
tree's thumbnails) and one 40 MB upload in 8 MiB parts (a checkpoint). Wall time and this
process's CPU time. Loopback against moto measures the clients' own overhead, not a network.

    .venv/bin/python bench/s3_clients.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PART = 8 << 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _timed(label: str, work) -> None:  # type: ignore[no-untyped-def]
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    print(
        f"{label:<40} {time.perf_counter() - wall:6.2f} s wall  "
        f"{time.process_time() - cpu:6.2f} s CPU"
    )


def main() -> int:
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        small = os.urandom(2000)
        with tempfile.NamedTemporaryFile(delete=False) as handle:
            handle.write(os.urandom(40 << 20))
        big = Path(handle.name)
        clients: dict[str, object] = {}

        def boto3_client() -> None:
            import boto3

            clients["boto3"] = boto3.client("s3", endpoint_url=endpoint)

        _timed("boto3: import + client", boto3_client)
        s3 = clients["boto3"]
        s3.create_bucket(Bucket="bench-bucket")  # type: ignore[attr-defined]

        def boto3_small() -> None:
            for i in range(100):
                s3.put_object(Bucket="bench-bucket", Key=f"b/{i}.png", Body=small)  # type: ignore[attr-defined]

        def boto3_big() -> None:
            from boto3.s3.transfer import TransferConfig

            config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART)
            s3.upload_file(str(big), "bench-bucket", "b/big.bin", Config=config)  # type: ignore[attr-defined]

        _timed("boto3: 100 small puts", boto3_small)
        _timed("boto3: 40 MB in 8 MiB parts", boto3_big)

        def obstore_client() -> None:
            from obstore.store import S3Store

            clients["obstore"] = S3Store(
                "bench-bucket",
                endpoint=endpoint,
                virtual_hosted_style_request=False,
                client_options={"allow_http": True},
            )

        _timed("obstore: import + client", obstore_client)
        import obstore

        store = clients["obstore"]
        _timed(
            "obstore: 100 small puts",
            lambda: [obstore.put(store, f"o/{i}.png", small) for i in range(100)],  # type: ignore[arg-type]
        )
        _timed(
            "obstore: 40 MB in 8 MiB parts",
            lambda: obstore.put(store, "o/big.bin", big, chunk_size=PART),  # type: ignore[arg-type]
        )
        big.unlink()
    finally:
        server.kill()
        server.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
