"""/datasets: upload (streamed, size-limited), import from allowed paths, preview with search,
pinning at submit, required metadata, roles, and hostile input leaving nothing behind."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_testing import make_settings
from fastapi.testclient import TestClient

from backend import crud
from backend.api import create_app
from backend.db import session_scope
from backend.settings import Settings
from treegrpo.rewards import names

DATASETS = "/api/v1/datasets"
JOBS = "/api/v1/jobs"
EXPERIMENTS = "/api/v1/experiments"
ROWS = [{"prompt": f"the number {d}", "digit": d} for d in range(10)]


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    folder = tmp_path / "roots"
    folder.mkdir()
    return folder


@pytest.fixture
def settings(tmp_path: Path, db_url: str, roots: Path) -> Settings:
    return make_settings(tmp_path, db_url, model_roots=str(roots), max_dataset_bytes=64 * 1024)


def _key(settings: Settings, name: str, role: str) -> dict[str, str]:
    with session_scope(settings.resolved_database_url) as session:
        _, key = crud.create_api_key(session, name=name, role=role)
    return {"X-API-Key": key}


def _upload(client: TestClient, auth: dict[str, str], body: Any, **query: str) -> Any:
    params = {"name": "digits-meta", "filename": "p.jsonl", **query}
    return client.post(f"{DATASETS}/upload", params=params, content=body, headers=auth)


def _nothing_stored(settings: Settings, client: TestClient) -> None:
    assert client.get(DATASETS).json() == {"data": [], "count": 0}
    store = settings.resolved_artifact_dir / "datasets"
    assert not store.exists() or not any(store.iterdir())
    tmp = settings.data_dir.resolve() / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir())


def test_upload_lists_previews_searches_and_pins_at_submit(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    answer = _upload(client, auth, _jsonl(ROWS))
    assert answer.status_code == 201, answer.text
    dataset = answer.json()
    assert dataset["splits"] == {"train": 10} and dataset["columns"] == ["digit"]
    sha = dataset["sha256"]
    assert (settings.resolved_artifact_dir / "datasets" / sha / "manifest.json").is_file()
    assert _upload(client, auth, _jsonl(ROWS)).json()["id"] == dataset["id"]  # same content
    listed = client.get(DATASETS).json()
    assert listed["count"] == 1 and listed["data"][0]["sha256"] == sha
    rows = client.get(f"{DATASETS}/{dataset['id']}/rows", params={"q": "NUMBER 7"}).json()
    assert rows == {
        "split": "train",
        "data": [{"row": 8, "prompt": "the number 7", "metadata": {"digit": 7}}],
        "count": 1,
    }
    page = client.get(f"{DATASETS}/{dataset['id']}/rows", params={"offset": 8}).json()
    assert [r["row"] for r in page["data"]] == [9, 10] and page["count"] == 10
    assert client.get(f"{DATASETS}/{dataset['id']}/rows?split=test").status_code == 404

    body = {
        "kind": "train",
        "preset": "digits-treegrpo",
        "config": {"prompts": {"dataset": "digits-meta"}, "epochs": 1},
    }
    job = client.post(JOBS, json=body, headers=auth)
    assert job.status_code == 201, job.text
    assert job.json()["config"]["prompts"] == {
        "dataset": "digits-meta",
        "split": "train",
        "sha256": sha,
    }
    shown = client.get(f"{DATASETS}/{dataset['id']}").json()
    assert shown["used_by"] == [job.json()["id"]]
    refused = client.delete(f"{DATASETS}/{dataset['id']}", headers=auth)
    assert refused.status_code == 409 and str(job.json()["id"]) in refused.json()["detail"]
    assert client.post(f"{JOBS}/{job.json()['id']}/cancel", headers=auth).status_code == 200
    assert client.delete(f"{JOBS}/{job.json()['id']}", headers=auth).status_code in (200, 204)
    assert client.delete(f"{DATASETS}/{dataset['id']}", headers=auth).status_code == 204
    assert not (settings.resolved_artifact_dir / "datasets" / sha).exists()


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({"prompts": {"dataset": "nope"}}, "prompts.dataset", "no dataset 'nope'"),
        ({"prompts": {"dataset": "digits-meta", "split": "test"}}, "prompts.split", "no split"),
        ({"eval_prompts": {"dataset": "digits-meta", "split": "x"}}, "eval_prompts.split", "x"),
        ({"prompts": {"dataset": "digits-meta", "sha256": "0" * 64}}, "prompts.sha256", "not"),
    ],
)
def test_a_bad_dataset_reference_is_a_422_naming_the_field(
    client: TestClient, auth: dict[str, str], config: dict[str, Any], field: str, message: str
) -> None:
    assert _upload(client, auth, _jsonl(ROWS)).status_code == 201
    body = {"kind": "train", "preset": "digits-treegrpo", "config": config}
    answer = client.post(JOBS, json=body, headers=auth)
    assert answer.status_code == 422, answer.text
    error = answer.json()["detail"][0]
    assert error["loc"] == ["body", "config", field] and message in error["msg"]


def test_required_metadata_is_checked_at_submit(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(names.REQUIRED_METADATA, "digit_judge", ("digit",))
    assert _upload(client, auth, _jsonl(ROWS)).status_code == 201
    bare = [{"prompt": r["prompt"]} for r in ROWS]
    assert _upload(client, auth, _jsonl(bare), name="bare").status_code == 201
    ok = {
        "kind": "train",
        "preset": "digits-treegrpo",
        "config": {"prompts": {"dataset": "digits-meta"}},
    }
    assert client.post(JOBS, json=ok, headers=auth).status_code == 201
    for prompts in ({"dataset": "bare"}, "digits"):
        body = {"kind": "train", "preset": "digits-treegrpo", "config": {"prompts": prompts}}
        answer = client.post(JOBS, json=body, headers=auth)
        assert answer.status_code == 422, answer.text
        assert "metadata key 'digit'" in answer.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("filename", "body", "status", "message"),
    [
        ("p.jsonl", b"", 422, "empty"),
        ("p.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 422, "binary"),
        ("p.csv", b"text\nhello\n", 422, "no 'prompt' column"),
        ("p.txt", b"ok\ncaf\xe9\n", 422, "row 2: undecodable"),
        ("p.jsonl", b'{"prompt": "a"}\n{"prompt": "' + b"x" * 3000 + b'"}\n', 422, "row 2"),
        ("p.jsonl", b'{"prompt": "a", "x": "' + b"y" * (100 * 1024) + b'"}\n', 413, "larger"),
    ],
)
def test_hostile_uploads_are_4xx_and_leave_nothing(
    client: TestClient,
    auth: dict[str, str],
    settings: Settings,
    filename: str,
    body: bytes,
    status: int,
    message: str,
) -> None:
    answer = _upload(client, auth, body, filename=filename)
    assert answer.status_code == status, answer.text
    assert message in answer.text
    _nothing_stored(settings, client)


def test_an_upload_past_the_limit_is_stopped_while_streaming(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    sent = []

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies as bytes arrive
        for _ in range(40):
            sent.append(1)
            yield b'{"prompt": "' + b"z" * 4000 + b'"}\n'

    answer = _upload(client, auth, chunks())
    assert answer.status_code == 413, answer.text
    _nothing_stored(settings, client)


def test_a_row_of_1_mb_is_refused(tmp_path: Path, db_url: str, auth: dict[str, str]) -> None:
    settings = make_settings(tmp_path, db_url, max_dataset_bytes=4 * 1024 * 1024)
    with TestClient(create_app(settings)) as client:
        answer = _upload(client, auth, _jsonl(ROWS[:1]) + b'{"prompt": "' + b"m" * 2**20 + b'"}\n')
        assert answer.status_code == 422 and "row 2" in answer.text
        _nothing_stored(settings, client)


def test_import_from_an_allowed_folder_and_refuse_traversal(
    client: TestClient, auth: dict[str, str], roots: Path, tmp_path: Path, settings: Settings
) -> None:
    geneval = roots / "geneval"
    geneval.mkdir()
    rows = [{"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a cat"}]
    (geneval / "test_metadata.jsonl").write_bytes(_jsonl(rows))
    (geneval / "train_metadata.jsonl").write_bytes(_jsonl(rows * 3))
    answer = client.post(DATASETS, json={"name": "geneval", "path": str(geneval)}, headers=auth)
    assert answer.status_code == 201, answer.text
    assert answer.json()["splits"] == {"test": 1, "train": 3}
    assert answer.json()["columns"] == ["include", "tag"]
    (tmp_path / "secret.jsonl").write_bytes(_jsonl(ROWS))
    for path in (str(roots / ".." / "secret.jsonl"), str(tmp_path / "secret.jsonl"), "/etc/passwd"):
        refused = client.post(DATASETS, json={"name": "evil", "path": path}, headers=auth)
        assert refused.status_code == 422 and "file rule" in refused.text, refused.text
    (roots / "link.jsonl").symlink_to(tmp_path / "secret.jsonl")
    refused = client.post(
        DATASETS, json={"name": "evil", "path": str(roots / "link.jsonl")}, headers=auth
    )
    assert refused.status_code == 422 and "file rule" in refused.text
    missing = client.post(DATASETS, json={"name": "x", "hub": "acme/none"}, headers=auth)
    assert missing.status_code == 422
    assert [d["name"] for d in client.get(DATASETS).json()["data"]] == ["geneval"]


def test_roles(client: TestClient, settings: Settings) -> None:
    alice = _key(settings, "alice", "member")
    mallory = _key(settings, "mallory", "member")
    vera = _key(settings, "vera", "viewer")
    root = _key(settings, "root", "admin")
    assert _upload(client, vera, _jsonl(ROWS)).status_code == 403
    assert _upload(client, {}, _jsonl(ROWS)).status_code == 401
    made = _upload(client, alice, _jsonl(ROWS)).json()
    assert client.delete(f"{DATASETS}/{made['id']}", headers=mallory).status_code == 403
    assert client.delete(f"{DATASETS}/{made['id']}", headers=vera).status_code == 403
    assert client.delete(f"{DATASETS}/{made['id']}", headers=root).status_code == 204
    again = _upload(client, alice, _jsonl(ROWS)).json()
    assert client.delete(f"{DATASETS}/{again['id']}", headers=alice).status_code == 204


def test_the_dataset_cli_imports_lists_and_shows(
    app: Any, api_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import api_testing as at

    from treegrpo.cli import main as treegrpo_main

    source = tmp_path / "digits.jsonl"
    source.write_bytes(_jsonl(ROWS))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\xfe\n")
    with at.live_server(app) as server:
        common = ["--api", server.url, "--api-key", api_key]
        assert treegrpo_main(["dataset", "import", str(source), "--name", "dig", *common]) == 0
        assert "dig" in capsys.readouterr().out
        assert treegrpo_main(["dataset", "import", str(bad), "--name", "bad", *common]) == 2
        assert "row 2: undecodable text" in capsys.readouterr().err
        assert treegrpo_main(["dataset", "list", *common]) == 0
        listed = capsys.readouterr().out.splitlines()
        assert len(listed) == 1 and "10 rows (train 10); digit" in listed[0]
        assert treegrpo_main(["dataset", "show", "dig", "--search", "number 4", *common]) == 0
        shown = capsys.readouterr().out
        assert "1 matching rows" in shown and 'the number 4  {"digit": 4}' in shown
        assert treegrpo_main(["dataset", "show", "nope", *common]) == 2


@pytest.mark.slow
def test_a_million_row_parquet_imports_through_the_api(tmp_path: Path, sqlite_url: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 1_000_000
    path = tmp_path / "million.parquet"
    pq.write_table(
        pa.table(
            {
                "prompt": [f"prompt number {i}" for i in range(rows)],
                "tag": pa.array(["a", "b"] * (rows // 2)),
            }
        ),
        path,
    )
    settings = make_settings(tmp_path, sqlite_url)
    auth = _key(settings, "importer", "member")
    with TestClient(create_app(settings)) as client, path.open("rb") as handle:
        answer = client.post(
            f"{DATASETS}/upload",
            params={"name": "million", "filename": "million.parquet"},
            content=handle,
            headers=auth,
        )
        assert answer.status_code == 201, answer.text
        made = answer.json()
        assert made["rows"] == rows and made["columns"] == ["tag"]
        last = client.get(f"{DATASETS}/{made['id']}/rows", params={"offset": rows - 1}).json()
        assert last["data"] == [
            {"row": rows, "prompt": f"prompt number {rows - 1}", "metadata": {"tag": "b"}}
        ]


def _two_seed_grid(dataset: str) -> dict[str, Any]:
    """An experiment of two digits runs (seeds 0 and 1) on `dataset`."""
    return {
        "preset": "digits-treegrpo",
        "config": {"prompts": {"dataset": dataset}},
        "axes": {"seed": [0, 1]},
        "budget": {"epochs": 1},
    }


def test_an_experiment_pins_its_datasets_and_every_change_is_audited(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    dataset = _upload(client, auth, _jsonl(ROWS)).json()
    experiment = client.post(EXPERIMENTS, json=_two_seed_grid("digits-meta"), headers=auth)
    assert experiment.status_code == 201, experiment.text
    runs = [run["job_id"] for run in experiment.json()["runs"]]
    for job_id in runs:  # each run reads the version it was submitted against, as a job does
        config = client.get(f"{JOBS}/{job_id}").json()["config"]
        assert config["prompts"]["sha256"] == dataset["sha256"]
    assert client.get(f"{DATASETS}/{dataset['id']}").json()["used_by"] == runs
    assert client.delete(f"{DATASETS}/{dataset['id']}", headers=auth).status_code == 409
    experiment_id = experiment.json()["id"]
    assert client.post(f"{EXPERIMENTS}/{experiment_id}/cancel", headers=auth).is_success
    assert client.delete(f"{EXPERIMENTS}/{experiment_id}", headers=auth).status_code == 204
    assert client.delete(f"{DATASETS}/{dataset['id']}", headers=auth).status_code == 204
    entries = client.get("/api/v1/audit", headers=auth).json()["data"]
    assert [(e["action"], e["target_id"]) for e in reversed(entries)] == [
        ("dataset.upload", str(dataset["id"])),
        ("experiment.create", str(experiment_id)),
        ("experiment.cancel", str(experiment_id)),
        ("experiment.delete", str(experiment_id)),
        ("dataset.delete", str(dataset["id"])),
    ]
    assert entries[-1]["detail"]["filename"] == "p.jsonl"
    assert entries[1]["detail"] == {"runs": runs}


def test_an_experiment_run_is_refused_for_missing_metadata_and_nothing_is_made(
    client: TestClient, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(names.REQUIRED_METADATA, "digit_judge", ("digit",))
    bare = [{"prompt": r["prompt"]} for r in ROWS]
    assert _upload(client, auth, _jsonl(bare), name="bare").status_code == 201
    answer = client.post(EXPERIMENTS, json=_two_seed_grid("bare"), headers=auth)
    assert answer.status_code == 422, answer.text
    (error,) = answer.json()["detail"]
    assert error["loc"][:3] == ["body", "runs", "digits-treegrpo seed=0"]
    assert "metadata key 'digit'" in error["msg"]
    assert client.get(JOBS).json()["count"] == 0
