"""The one error of a dataset import or read: what is wrong, and where (file and row)."""

from __future__ import annotations


class DatasetError(ValueError):
    """Bad dataset input. `row` is 1-based (the line of a text file, the record of a table);
    None when the problem is the file as a whole (empty, binary, unknown format)."""

    def __init__(self, reason: str, *, row: int | None = None, source: str | None = None) -> None:
        self.reason = reason
        self.row = row
        self.source = source
        where = ", ".join(
            part for part in (source, f"row {row}" if row is not None else None) if part
        )
        super().__init__(f"{where}: {reason}" if where else reason)
