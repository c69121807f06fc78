"""A bad TREEGRPO_* value is one readable line from any `treegrpo` service command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TREEGRPO = str(Path(sys.executable).parent / "treegrpo")


@pytest.mark.parametrize(
    ("variable", "value", "command"),
    [
        ("TREEGRPO_READS_REQUIRE_KEY", "maybe", ["migrate"]),
        ("TREEGRPO_HEARTBEAT_SECONDS", "-1", ["worker"]),
        ("TREEGRPO_STALE_AFTER_SECONDS", "soon", ["serve", "--port", "1"]),
    ],
)
def test_a_bad_setting_is_named_without_a_traceback(
    tmp_path: Path, variable: str, value: str, command: list[str]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREEGRPO_")}
    env.update({variable: value, "TREEGRPO_DATA_DIR": str(tmp_path)})
    result = subprocess.run(
        [TREEGRPO, *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"invalid setting {variable}:" in result.stderr
    assert repr(value) in result.stderr
