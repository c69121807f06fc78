"""Import progress (treegrpo/datasets/progress.py): the callback hears the bytes of the source
read, in increasing counts that end at the total, for every format and across a folder's
splits; reports are throttled in time; a failed import never reports the total."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from treegrpo.datasets import DatasetError, progress
from treegrpo.datasets.importer import import_file, import_folder
from treegrpo.datasets.progress import PROGRESS_ROWS, ImportProgress

COUNT = 5 * PROGRESS_ROWS + 300  # five reports from the readers, then the file's end


def _prompts(count: int = COUNT, word: str = "square") -> list[dict[str, object]]:
    return [{"prompt": f"a {word} number {i}", "n": i} for i in range(count)]


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    if path.suffix == ".txt":
        path.write_text("".join(f"{r['prompt']}\n" for r in rows))
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["prompt", "n"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture
def every_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """No time between reports: every report of the readers comes through."""
    monkeypatch.setattr(progress, "REPORT_SECONDS", 0.0)


def _assert_climbs_to(calls: list[tuple[int, int]], total: int, at_least: int) -> None:
    assert len(calls) >= at_least, calls
    done = [d for d, _ in calls]
    assert all(t == total for _, t in calls)
    assert done == sorted(set(done)) and done[0] > 0  # strictly increasing
    assert calls[-1] == (total, total)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv", ".parquet"])
@pytest.mark.usefixtures("every_report")
def test_a_file_reports_increasing_bytes_ending_at_its_size(suffix: str, tmp_path: Path) -> None:
    source = _write(tmp_path / f"prompts{suffix}", _prompts())
    calls: list[tuple[int, int]] = []
    manifest = import_file(source, tmp_path / "out", progress=lambda d, t: calls.append((d, t)))
    assert manifest["rows"] == COUNT
    size = source.stat().st_size
    _assert_climbs_to(calls, size, at_least=COUNT // PROGRESS_ROWS + 1)
    assert calls[-2][0] < size  # the readers' reports came before the end, not all at it


@pytest.mark.usefixtures("every_report")
def test_a_folder_reports_over_all_its_splits_files(tmp_path: Path) -> None:
    folder = tmp_path / "ocr"
    folder.mkdir()
    test = _write(folder / "test.txt", _prompts(2 * PROGRESS_ROWS, "circle"))
    train = _write(folder / "train.txt", _prompts())
    calls: list[tuple[int, int]] = []
    manifest = import_folder(folder, tmp_path / "out", progress=lambda d, t: calls.append((d, t)))
    assert manifest["splits"]["test"]["rows"] == 2 * PROGRESS_ROWS
    total = test.stat().st_size + train.stat().st_size
    _assert_climbs_to(calls, total, at_least=7)
    # The test split (first in name order) is read whole before train starts.
    assert (test.stat().st_size, total) in calls


def test_a_failed_import_never_reports_the_total(tmp_path: Path) -> None:
    rows = _prompts(3 * PROGRESS_ROWS)
    rows[2 * PROGRESS_ROWS + 5]["prompt"] = ""
    source = _write(tmp_path / "bad.jsonl", rows)
    calls: list[tuple[int, int]] = []
    with pytest.raises(DatasetError, match=f"row {2 * PROGRESS_ROWS + 6}"):
        import_file(source, tmp_path / "out", progress=lambda d, t: calls.append((d, t)))
    assert calls and all(done < source.stat().st_size for done, _ in calls)


def test_reports_are_throttled_in_time_and_the_last_is_the_total() -> None:
    now = [0.0]
    calls: list[tuple[int, int]] = []
    tracker = ImportProgress(
        1000, lambda d, t: calls.append((d, t)), interval=1.0, clock=lambda: now[0]
    )
    for step in range(10):  # 100 bytes every 0.25 s
        now[0] = step * 0.25
        tracker.advance(100)
    assert calls == [(100, 1000), (500, 1000), (900, 1000)]  # at 0, 1 and 2 s
    tracker.advance(5000)  # never past the total ...
    now[0] = 10.0
    tracker.advance(0)  # ... nor the same count twice
    assert calls[-1] == (1000, 1000) and len(calls) == 4
    tracker.finish()
    assert len(calls) == 4  # the total was reported already
    fresh: list[tuple[int, int]] = []
    quiet = ImportProgress(50, lambda d, t: fresh.append((d, t)), interval=60.0, clock=lambda: 0.0)
    quiet.advance(10)
    quiet.advance(10)
    quiet.finish()
    assert fresh == [(10, 50), (50, 50)]
