"""`make up` prints the banner README.md shows (the issue found them different)."""

from __future__ import annotations

import re
from pathlib import Path

from backend.up import banner

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_up_banner_is_the_readme_s() -> None:
    text = README.read_text()
    block = re.search(r"\$ make up\n\.\.\.\n(.*?)```", text, re.S)
    assert block is not None, "README's Quick start banner block"
    assert block.group(1) == banner("http://127.0.0.1:8000", "tgk_...")
