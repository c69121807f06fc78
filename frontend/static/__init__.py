"""The dashboard's static files: its stylesheet and the JavaScript its components load
(`js_on_load`), kept as real .css/.js files rather than Python strings."""

from __future__ import annotations

from functools import cache
from pathlib import Path

FOLDER = Path(__file__).resolve().parent


@cache
def read_static(name: str) -> str:
    """The text of frontend/static/`name` (read once)."""
    return (FOLDER / name).read_text(encoding="utf-8")
