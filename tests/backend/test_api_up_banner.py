"""The start-up banner of `treegrpo up` / `make up` is the one README.md shows (issue 18: they
had drifted apart)."""

from __future__ import annotations

from pathlib import Path

from backend.up import startup_banner

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_quotes_the_banner_as_printed() -> None:
    printed = startup_banner("http://127.0.0.1:8000", "tgk_...")
    assert printed in README.read_text(), printed
