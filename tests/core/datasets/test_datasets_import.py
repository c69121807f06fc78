"""Importing prompt datasets: formats, metadata, content hashes, and bad input by row."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from treegrpo.datasets import DatasetError
from treegrpo.datasets.importer import import_file, import_folder, import_hub
from treegrpo.datasets.prompt_rows import InlinePrompts, draw, open_prompts
from treegrpo.datasets.ref import DatasetRef
from treegrpo.datasets.sources import MAX_PROMPT_CHARS, MAX_ROW_BYTES
from treegrpo.datasets.table import open_split, verify

ROWS = [
    {"prompt": "a red cube", "tag": "colors", "count": 1},
    {"prompt": "two cats", "tag": "counting", "count": 2},
    {"prompt": 'a sign that says "hello"', "tag": "ocr", "count": 1},
]


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_csv_and_parquet_of_the_same_rows_are_one_version(tmp_path: Path) -> None:
    jsonl = _jsonl(tmp_path / "p.jsonl", ROWS)
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), parquet)
    csv = tmp_path / "p.csv"
    csv.write_text(
        "prompt,tag,count\n"
        + "".join(
            f'"{r["prompt"]}",{r["tag"]},{r["count"]}\n'.replace(
                '"a sign that says "hello""', '"a sign that says ""hello"""'
            )
            for r in ROWS
        )
    )
    a = import_file(jsonl, tmp_path / "a")
    b = import_file(parquet, tmp_path / "b")
    c = import_file(csv, tmp_path / "c")
    assert a["sha256"] == b["sha256"]  # same rows, other format and file name
    assert a["rows"] == 3 and a["columns"] == ["count", "tag"]
    # CSV cells are text: the metadata differs (count "1"), so the version does too.
    assert c["sha256"] != a["sha256"]
    split = open_split(tmp_path / "c", "train")
    assert split.rows([2]) == [('a sign that says "hello"', {"count": "1", "tag": "ocr"})]
    rewritten = _jsonl(tmp_path / "again.jsonl", ROWS)  # identical bytes, new file and mtime
    assert import_file(rewritten, tmp_path / "d")["sha256"] == a["sha256"]
    _jsonl(rewritten, [*ROWS[:2], {**ROWS[2], "count": 3}])
    assert import_file(rewritten, tmp_path / "e")["sha256"] != a["sha256"]


def test_txt_rows_have_no_metadata_and_rows_read_back_memory_mapped(tmp_path: Path) -> None:
    txt = tmp_path / "train.txt"
    txt.write_text("first prompt\n\n  second prompt  \nthird\n")
    manifest = import_file(txt, tmp_path / "v", split="train")
    assert manifest["splits"]["train"]["rows"] == 3 and manifest["columns"] == []
    split = open_split(tmp_path / "v", "train", manifest["sha256"])
    assert len(split) == 3
    assert split.rows([2, 0]) == [("third", {}), ("first prompt", {})]
    found, total = split.search("PROMPT", limit=1)
    assert total == 2 and found == [{"row": 1, "prompt": "first prompt", "metadata": {}}]


def test_flow_grpo_folder_takes_every_split_with_geneval_metadata(tmp_path: Path) -> None:
    folder = tmp_path / "geneval"
    folder.mkdir()
    clause = {
        "tag": "counting",
        "include": [{"class": "cat", "count": 2}],
        "exclude": [{"class": "cat", "count": 3}],
    }
    _jsonl(folder / "train_metadata.jsonl", [{**clause, "prompt": "a photo of two cats"}] * 5)
    _jsonl(folder / "test_metadata.jsonl", [{**clause, "prompt": "a photo of two cats"}])
    (folder / "README.md").write_text("not a split")
    manifest = import_folder(folder, tmp_path / "v")
    assert {s: i["rows"] for s, i in manifest["splits"].items()} == {"test": 1, "train": 5}
    assert manifest["columns"] == ["exclude", "include", "tag"]
    assert open_split(tmp_path / "v", "test").rows([0]) == [("a photo of two cats", clause)]
    ocr = tmp_path / "ocr"
    ocr.mkdir()
    (ocr / "train.txt").write_text('a sign "open"\n')
    (ocr / "test.txt").write_text('a sign "shut"\n')
    assert sorted(import_folder(ocr, tmp_path / "w")["splits"]) == ["test", "train"]


def test_hub_cache_dataset_is_pinned_to_its_commit_offline(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--acme--prompts"
    snapshot = repo / "snapshots" / commit / "data"
    snapshot.mkdir(parents=True)
    pq.write_table(
        pa.table({"prompt": ["p1", "p2"], "style": ["anime", "photo"]}),
        snapshot / "train-00000-of-00001.parquet",
    )
    pq.write_table(
        pa.table({"prompt": ["q"], "style": ["photo"]}), snapshot / "test-00000-of-00001.parquet"
    )
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    manifest = import_hub("acme/prompts", tmp_path / "v", cache_dir=tmp_path / "hub")
    assert (
        manifest["source"]["commit"] == commit and manifest["source"]["repo_id"] == "acme/prompts"
    )
    assert manifest["splits"]["train"]["rows"] == 2
    with pytest.raises(DatasetError, match="not in the local Hugging Face cache"):
        import_hub("acme/missing", tmp_path / "w", cache_dir=tmp_path / "hub")


@pytest.mark.parametrize(
    ("name", "content", "message", "row"),
    [
        ("empty.txt", b"", "empty", None),
        ("blank.jsonl", b"\n\n", "empty", None),
        ("nocol.jsonl", b'{"text": "a cat"}\n', "no 'prompt' column", 1),
        ("nocol.csv", b"text,tag\na,b\n", "no 'prompt' column", 1),
        ("long.txt", b"ok\n" + b"x" * (MAX_PROMPT_CHARS + 1) + b"\n", "characters", 2),
        ("latin1.txt", b"ok\ncaf\xe9\n", "not UTF-8", 2),
        ("binary.txt", b"ok\n\x89PNG\r\n\x1a\n\x00\x00\x00", "binary", None),
        ("late-nul.txt", b"ok\n" * 5000 + b"a\x00b\n", "binary", 5001),
        ("binary.csv", b"prompt\nok\n\x00\x01\n", "binary", None),
        (
            "row.jsonl",
            b'{"prompt": "a"}\n{"prompt": "b", "x": "' + b"y" * (1 << 20) + b'"}\n',
            "row limit",
            2,
        ),
        ("row.csv", b"prompt,x\na,b\nc," + b"y" * (1 << 20) + b"\n", "row limit", 3),
        ("bad.jsonl", b'{"prompt": "a"}\n[1, 2]\n', "not a JSON object", 2),
        ("num.jsonl", b'{"prompt": 3}\n', "not text", 1),
        ("fake.parquet", b"not parquet at all", "Parquet", None),
        ("x.exe", b"MZ", "unknown format", None),
    ],
)
def test_bad_input_names_the_row_and_leaves_no_manifest(
    tmp_path: Path, name: str, content: bytes, message: str, row: int | None
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message) as caught:
        import_file(path, tmp_path / "v")
    assert caught.value.row == row
    if row is not None:
        assert f"row {row}" in str(caught.value)
    assert not (tmp_path / "v" / "manifest.json").exists()


def test_row_over_the_size_limit_in_parquet_metadata(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "blob": ["x", "y" * MAX_ROW_BYTES]}), path)
    with pytest.raises(DatasetError, match="row 2: the row is"):
        import_file(path, tmp_path / "v")


def test_verify_refuses_another_version_and_an_altered_file(tmp_path: Path) -> None:
    manifest = import_file(_jsonl(tmp_path / "p.jsonl", ROWS), tmp_path / "v")
    with pytest.raises(DatasetError, match="refusing"):
        verify(tmp_path / "v", "0" * 64)
    pq.write_table(
        pa.table({"prompt": ["evil"], "metadata": ["{}"]}), tmp_path / "v" / "train.parquet"
    )
    with pytest.raises(DatasetError, match="altered"):
        open_split(tmp_path / "v", "train", manifest["sha256"])


def test_draw_is_seeded_and_equals_the_draw_over_a_list() -> None:
    # Inline prompts draw the rows `rng.sample(list)` / `rng.choices(list)` drew before.
    prompts = [f"p{i}" for i in range(10)]
    for count in (4, 25):
        old = random.Random(7)
        expected = old.sample(prompts, count) if count <= 10 else old.choices(prompts, k=count)
        source = InlinePrompts(prompts)
        got = [p for p, _ in source.rows(draw(len(source), count, random.Random(7)))]
        assert got == expected
    assert draw(1_000_000, 4, random.Random(3)) == draw(1_000_000, 4, random.Random(3))


def test_open_prompts_needs_a_pinned_version_or_a_folder(tmp_path: Path) -> None:
    manifest = import_file(_jsonl(tmp_path / "p.jsonl", ROWS), tmp_path / "store" / "x")
    (tmp_path / "store" / "x").rename(tmp_path / "store" / manifest["sha256"])
    pinned = DatasetRef("mine", "train", manifest["sha256"])
    assert len(open_prompts(pinned, tmp_path / "store")) == 3
    with pytest.raises(DatasetError, match="not pinned"):
        open_prompts(DatasetRef("mine"), tmp_path / "store")
    assert open_prompts(DatasetRef(str(tmp_path / "store" / manifest["sha256"])), None).rows(
        [1]
    ) == [("two cats", {"count": 2, "tag": "counting"})]
