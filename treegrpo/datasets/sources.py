"""Reading prompt rows from a file, streamed: txt (one prompt a line), jsonl, csv or parquet.

Every reader yields `Row(number, prompt, metadata)`: `number` is 1-based (the line of a text
file, the record of a table), `metadata` the row's other columns. Nothing is read whole: text
files line by line with a bound on the line's length, Parquet batch by batch. Bad input raises
DatasetError naming the row: an empty file, a missing prompt column, an empty or over-long
prompt, undecodable (non UTF-8) text, a binary file, a row over MAX_ROW_BYTES.

    for row in read_rows(Path("train.jsonl")):
        row.prompt, row.metadata
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from treegrpo.datasets.errors import DatasetError
from treegrpo.datasets.progress import PROGRESS_ROWS

FORMATS = ("txt", "jsonl", "csv", "parquet")
MAX_PROMPT_CHARS = 2000
MAX_ROW_BYTES = 64 * 1024  # a row's prompt and metadata together, as UTF-8 JSON
PROMPT_COLUMN = "prompt"
PARQUET_BATCH = 4096


@dataclass(frozen=True)
class Row:
    number: int  # 1-based
    prompt: str
    metadata: dict[str, Any] = field(default_factory=dict)
    metadata_text: str = ""  # its canonical JSON, filled in by `checked`


def format_of(path: Path) -> str:
    """The format a file's name says (`.txt`, `.jsonl`, `.csv`, `.parquet`), else DatasetError."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix == "ndjson":
        suffix = "jsonl"
    if suffix not in FORMATS:
        raise DatasetError(
            f"unknown format {path.suffix or '(no suffix)'!r}; expected one of "
            + ", ".join(f".{f}" for f in FORMATS),
            source=path.name,
        )
    return suffix


def read_rows(
    path: Path,
    fmt: str | None = None,
    prompt_column: str = PROMPT_COLUMN,
    on_read: Callable[[int], None] | None = None,
) -> Iterator[Row]:
    """The rows of one file, checked; DatasetError (with the row) at the first bad one.
    `on_read(nbytes)` hears of the bytes read since its last call (treegrpo/datasets/progress.py):
    every PROGRESS_ROWS rows, and once the file is done, so its calls add up to the file's size."""
    fmt = fmt or format_of(path)
    source = path.name
    count = 0
    position: Callable[[int], int]
    if fmt == "parquet":
        rows: Iterator[Row] = _parquet_rows(path, prompt_column, source)
        position = _parquet_position(path)
    else:
        handle = path.open("rb")
        rows = _text_rows(handle, fmt, prompt_column, source)
        position = _text_position(handle)
    reported = 0

    def report(at: int) -> None:
        nonlocal reported
        if on_read is not None and at > reported:
            on_read(at - reported)
            reported = at

    for row in rows:
        count += 1
        yield checked(row, source)
        if on_read is not None and count % PROGRESS_ROWS == 0:
            report(position(count))
    if count == 0:
        raise DatasetError("the file holds no prompts (it is empty)", source=source)
    report(path.stat().st_size)


def _text_position(handle: IO[bytes]) -> Callable[[int], int]:
    """Bytes read of a text file: its position (csv's decoder reads ahead by a block at most)."""
    return lambda _count: handle.tell()


def _parquet_position(path: Path) -> Callable[[int], int]:
    """Bytes "read" of a Parquet file after `count` rows: its size times the share of rows read
    (its bytes are read by column chunk, so no file position says how far the rows are)."""
    total: list[int] = []

    def position(count: int) -> int:
        if not total:  # only asked once rows were read, so the file is readable
            import pyarrow.parquet as pq

            total.append(max(1, pq.ParquetFile(path).metadata.num_rows))
        return path.stat().st_size * min(count, total[0]) // total[0]

    return position


def checked(row: Row, source: str) -> Row:
    """`row` if its prompt and size are within the limits, else DatasetError naming it."""
    prompt = row.prompt
    if not prompt.strip():
        raise DatasetError("the prompt is empty", row=row.number, source=source)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise DatasetError(
            f"the prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}",
            row=row.number,
            source=source,
        )
    if "\x00" in prompt:
        raise DatasetError("the prompt holds a NUL character", row=row.number, source=source)
    text = metadata_json(row.metadata, row, source)
    size = len(prompt.encode("utf-8", "surrogatepass")) + len(text.encode("utf-8"))
    if size > MAX_ROW_BYTES:
        raise DatasetError(
            f"the row is {size} bytes; the limit is {MAX_ROW_BYTES}", row=row.number, source=source
        )
    return Row(row.number, prompt, row.metadata, text)


_JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def metadata_json(metadata: Mapping[str, Any], row: Row | None = None, source: str = "") -> str:
    """The canonical JSON of a row's metadata: sorted keys, no spaces, UTF-8 text (values JSON
    cannot hold, a date say, as their text)."""
    if not metadata:
        return "{}"
    try:
        return orjson.dumps(metadata, default=str, option=_JSON_OPTIONS).decode("utf-8")
    except (TypeError, ValueError) as exc:
        raise DatasetError(
            f"the metadata is not JSON ({exc})", row=row.number if row else None, source=source
        ) from None


# -- text formats: line by line ----------------------------------------------------------------


def _lines(handle: IO[bytes], source: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, decoded; never more than one line in memory."""
    number = 0
    while True:
        raw = handle.readline(MAX_ROW_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_ROW_BYTES and not raw.endswith(b"\n"):
            raise DatasetError(
                f"the line is longer than the row limit of {MAX_ROW_BYTES} bytes",
                row=number,
                source=source,
            )
        if b"\x00" in raw:
            raise DatasetError(
                "the file is binary (a NUL byte), not text", row=number, source=source
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DatasetError(
                f"undecodable text: not UTF-8 (byte {exc.start + 1} of the line)",
                row=number,
                source=source,
            ) from None
        if number == 1:
            text = text.removeprefix("\ufeff")
        yield number, text.rstrip("\r\n")


SNIFF_BYTES = 8192


def _text_rows(handle: IO[bytes], fmt: str, prompt_column: str, source: str) -> Iterator[Row]:
    with handle:
        # A binary file (an image, an archive) is named as such, not as bad text at some row;
        # a NUL further on is still caught on its line.
        if b"\x00" in handle.read(SNIFF_BYTES):
            raise DatasetError("the file is binary (a NUL byte), not text", source=source)
        handle.seek(0)
        if fmt == "txt":
            for number, text in _lines(handle, source):
                if text.strip():
                    yield Row(number, text.strip())
        elif fmt == "jsonl":
            for number, text in _lines(handle, source):
                if text.strip():
                    yield _json_row(number, text, prompt_column, source)
        else:
            yield from _csv_rows(handle, prompt_column, source)


def _json_row(number: int, text: str, prompt_column: str, source: str) -> Row:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise DatasetError(f"not a JSON object ({exc})", row=number, source=source) from None
    if not isinstance(value, dict):
        raise DatasetError("not a JSON object", row=number, source=source)
    return _table_row(number, value, prompt_column, source)


def _table_row(number: int, record: dict[str, Any], prompt_column: str, source: str) -> Row:
    if prompt_column not in record:
        raise DatasetError(
            f"no {prompt_column!r} column (columns: {', '.join(map(str, record)) or 'none'})",
            row=number,
            source=source,
        )
    prompt = record[prompt_column]
    if not isinstance(prompt, str):
        raise DatasetError(
            f"the {prompt_column!r} value is {type(prompt).__name__}, not text",
            row=number,
            source=source,
        )
    metadata = {str(k): _plain(v) for k, v in record.items() if k != prompt_column}
    return Row(number, prompt.strip(), metadata)


def _plain(value: Any) -> Any:
    """NaN (a missing cell of pandas-written files) as null; everything else as is."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv_rows(handle: IO[bytes], prompt_column: str, source: str) -> Iterator[Row]:
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
    csv.field_size_limit(MAX_ROW_BYTES)
    reader = csv.reader(text)
    number = 0
    try:
        header = next(reader, None)
        if header is None:
            return
        if prompt_column not in header:
            raise DatasetError(
                f"no {prompt_column!r} column (columns: {', '.join(header) or 'none'})",
                row=1,
                source=source,
            )
        for values in reader:
            number = reader.line_num
            if not any(values):
                continue
            if len(values) != len(header):
                raise DatasetError(
                    f"{len(values)} fields for {len(header)} columns", row=number, source=source
                )
            yield _table_row(number, dict(zip(header, values, strict=True)), prompt_column, source)
    except UnicodeDecodeError:
        raise DatasetError(
            "undecodable text: not UTF-8", row=reader.line_num + 1, source=source
        ) from None
    except csv.Error as exc:
        reason = str(exc)
        if "NUL" in reason:
            reason = "the file is binary (a NUL byte), not text"
        elif "field larger" in reason:
            reason = f"a field is longer than the row limit of {MAX_ROW_BYTES} bytes"
        # csv counted the line it failed on (unlike a decoding error, raised before it).
        raise DatasetError(reason, row=max(reader.line_num, 1), source=source) from None


# -- parquet: batch by batch -------------------------------------------------------------------


def _parquet_rows(path: Path, prompt_column: str, source: str) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path, memory_map=True)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"not a readable Parquet file ({exc})", source=source) from None
    names = file.schema_arrow.names
    if prompt_column not in names:
        raise DatasetError(
            f"no {prompt_column!r} column (columns: {', '.join(names) or 'none'})", source=source
        )
    number = 0
    try:
        for batch in file.iter_batches(batch_size=PARQUET_BATCH):
            for record in batch.to_pylist():
                number += 1
                yield _table_row(number, record, prompt_column, source)
    except pa.ArrowException as exc:
        raise DatasetError(f"unreadable Parquet ({exc})", row=number + 1, source=source) from None
