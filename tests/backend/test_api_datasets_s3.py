"""Prompt datasets with the artifact store in a bucket (a real S3 API: moto's server on
loopback): an upload and a folder import land as objects in the bucket (and nowhere in the
local artifact folder), listing and previews read them back row for row through the API's
cache of the bucket, and a delete removes the objects and that cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import api_testing as at
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from moto_s3 import make_bucket

from backend import crud
from backend.api import create_app
from backend.db import session_scope
from backend.s3_store import S3Store
from backend.settings import Settings

DATASETS = "/api/v1/datasets"
# 2,500 rows: three row groups of the stored Parquet (1,024 rows each), so reads cross groups.
ROWS = [
    {"prompt": f"a photo of {i} red apples", "count": i, "odd": i % 2 == 1} for i in range(2500)
]


@pytest.fixture(autouse=True)
def _credentials(aws_env: None) -> None:
    """Every test here talks to moto with its credentials."""


@pytest.fixture
def bucket(endpoint: str) -> S3Store:
    return S3Store(f"s3://{make_bucket(endpoint)}/studio", endpoint)


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str, bucket: S3Store, endpoint: str) -> Settings:
    roots = tmp_path / "roots"
    roots.mkdir()
    return at.make_settings(
        tmp_path,
        sqlite_url,
        artifact_url=bucket.url,
        s3_endpoint_url=endpoint,
        model_roots=str(roots),
    )


@pytest.fixture
def auth(settings: Settings) -> dict[str, str]:
    with session_scope(settings.resolved_database_url) as session:
        _, key = crud.create_api_key(session, name="importer", role="member")
    return {"X-API-Key": key}


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _expected(rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(r["prompt"], {k: v for k, v in r.items() if k != "prompt"}) for r in rows]


def _bucket_split(bucket: S3Store, sha: str, split: str, tmp_path: Path) -> list[Any]:
    """A split's rows as the bucket holds them: the object downloaded and read with pyarrow."""
    copy = tmp_path / "from-bucket" / sha / f"{split}.parquet"
    bucket.download(f"datasets/{sha}/{split}.parquet", copy)
    table = pq.read_table(copy)
    return [
        (prompt, json.loads(meta))
        for prompt, meta in zip(
            table.column("prompt").to_pylist(), table.column("metadata").to_pylist(), strict=True
        )
    ]


def _all_rows(client: TestClient, dataset_id: int, split: str) -> list[Any]:
    """Every row of a split through GET /rows, a page (200 rows) at a time."""
    found: list[Any] = []
    while True:
        page = client.get(
            f"{DATASETS}/{dataset_id}/rows",
            params={"split": split, "offset": len(found), "limit": 200},
        ).json()
        found += [(r["prompt"], r["metadata"]) for r in page["data"]]
        if len(found) >= page["count"]:
            return found


def test_an_upload_is_stored_in_the_bucket_and_read_back_row_for_row(
    settings: Settings, auth: dict[str, str], bucket: S3Store, tmp_path: Path
) -> None:
    with TestClient(create_app(settings)) as client:
        answer = client.post(
            f"{DATASETS}/upload",
            params={"name": "apples", "filename": "apples.jsonl"},
            content=_jsonl(ROWS),
            headers=auth,
        )
        assert answer.status_code == 201, answer.text
        made = answer.json()
        sha = made["sha256"]
        assert made["splits"] == {"train": len(ROWS)} and made["columns"] == ["count", "odd"]
        assert bucket.keys(f"datasets/{sha}") == [
            f"datasets/{sha}/manifest.json",
            f"datasets/{sha}/train.parquet",
        ]
        manifest = json.loads(b"".join(bucket.stream(f"datasets/{sha}/manifest.json")))
        assert manifest["sha256"] == sha and manifest["rows"] == len(ROWS)
        assert _bucket_split(bucket, sha, "train", tmp_path) == _expected(ROWS)
        # The bucket is the store: nothing of the dataset in the local artifact folder.
        assert not (settings.resolved_artifact_dir / "datasets").exists()

        listed = client.get(DATASETS).json()
        assert [(d["id"], d["sha256"], d["rows"]) for d in listed["data"]] == [
            (made["id"], sha, len(ROWS))
        ]
        assert _all_rows(client, made["id"], "train") == _expected(ROWS)
        found = client.get(f"{DATASETS}/{made['id']}/rows", params={"q": "OF 2499 RED"}).json()
        assert found == {
            "split": "train",
            "data": [
                {
                    "row": 2500,
                    "prompt": "a photo of 2499 red apples",
                    "metadata": {"count": 2499, "odd": True},
                }
            ],
            "count": 1,
        }
        cache = settings.data_dir.resolve() / "cache" / "datasets" / sha
        assert (cache / "manifest.json").is_file()

        assert client.delete(f"{DATASETS}/{made['id']}", headers=auth).status_code == 204
        assert bucket.keys(f"datasets/{sha}") == []
        assert not cache.exists()  # the API's copy goes with the objects
        assert client.get(DATASETS).json()["count"] == 0


def test_a_folder_import_puts_every_split_in_the_bucket(
    settings: Settings, auth: dict[str, str], bucket: S3Store, tmp_path: Path
) -> None:
    folder = Path(settings.model_roots) / "ocr"
    folder.mkdir()
    train = [f"a sign that says 'open {i}'" for i in range(1500)]
    test = [f"a mug printed with 'cafe {i}'" for i in range(40)]
    (folder / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "test.txt").write_text("\n".join(test) + "\n")
    with TestClient(create_app(settings)) as client:
        answer = client.post(DATASETS, json={"name": "ocr", "path": str(folder)}, headers=auth)
        assert answer.status_code == 201, answer.text
        made = answer.json()
        sha = made["sha256"]
        assert made["splits"] == {"test": 40, "train": 1500}
        assert bucket.keys(f"datasets/{sha}") == [
            f"datasets/{sha}/{name}" for name in ("manifest.json", "test.parquet", "train.parquet")
        ]
        assert _bucket_split(bucket, sha, "train", tmp_path) == [(p, {}) for p in train]
        assert _bucket_split(bucket, sha, "test", tmp_path) == [(p, {}) for p in test]
        assert _all_rows(client, made["id"], "test") == [(p, {}) for p in test]
        assert _all_rows(client, made["id"], "train") == [(p, {}) for p in train]
        # The same content again: the objects are reused, not written twice.
        again = client.post(DATASETS, json={"name": "ocr", "path": str(folder)}, headers=auth)
        assert again.status_code == 201 and again.json()["id"] == made["id"]
        assert len(bucket.keys("datasets")) == 3


def test_a_preview_of_objects_missing_or_altered_in_the_bucket_is_a_404_and_caches_nothing(
    settings: Settings, auth: dict[str, str], bucket: S3Store, tmp_path: Path
) -> None:
    with TestClient(create_app(settings)) as client:
        made = client.post(
            f"{DATASETS}/upload",
            params={"name": "apples", "filename": "apples.jsonl"},
            content=_jsonl(ROWS[:50]),
            headers=auth,
        ).json()
        sha, rows_url = made["sha256"], f"{DATASETS}/{made['id']}/rows"
        good, manifest = tmp_path / "train.parquet", tmp_path / "manifest.json"
        bucket.download(f"datasets/{sha}/train.parquet", good)
        bucket.download(f"datasets/{sha}/manifest.json", manifest)
        altered = tmp_path / "altered.parquet"
        altered.write_bytes(good.read_bytes()[:-64] + b"\0" * 64)
        bucket.put_file(f"datasets/{sha}/train.parquet", altered)
        answer = client.get(rows_url)
        assert answer.status_code == 404 and "altered" in answer.json()["detail"], answer.text
        bucket.delete_prefix(f"datasets/{sha}")
        answer = client.get(rows_url)
        assert answer.status_code == 404 and "not in the artifact store" in answer.json()["detail"]
        assert not (settings.data_dir.resolve() / "cache").exists()
        assert not any((settings.data_dir.resolve() / "tmp").iterdir())
        bucket.put_file(f"datasets/{sha}/train.parquet", good)  # restored: readable again
        bucket.put_file(f"datasets/{sha}/manifest.json", manifest)
        assert client.get(rows_url).json()["count"] == 50


def test_concurrent_first_reads_share_one_verified_copy(
    settings: Settings, bucket: S3Store, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from backend import datasets as service
    from treegrpo.datasets.importer import import_file
    from treegrpo.datasets.table import open_split, verify

    source = tmp_path / "apples.jsonl"
    source.write_bytes(_jsonl(ROWS))
    manifest = import_file(source, tmp_path / "version")
    service.publish(bucket, tmp_path / "version", manifest)
    sha = manifest["sha256"]
    with ThreadPoolExecutor(4) as pool:
        folders = list(pool.map(lambda _: service.local_version(bucket, settings, sha), range(4)))
    assert len(set(folders)) == 1
    verify(folders[0], sha)
    assert open_split(folders[0], "train").rows([0, 2499]) == [
        _expected(ROWS)[0],
        _expected(ROWS)[2499],
    ]
    assert not any((settings.data_dir.resolve() / "tmp").iterdir())  # no private copy left
