"""No number moves: every preset resolves to the dict recorded before the config package split.

The golden file was written by the pre-split `treegrpo/config.py` (one entry per preset, plus the
defaults), with keys in `to_dict` order, so a changed default, a renamed field or a reordered
section all show up here as a diff.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from treegrpo.config import RunConfig, resolve_config
from treegrpo.presets import PRESETS

GOLDEN_PATH = Path(__file__).parent / "golden" / "config_presets.json"
GOLDEN: dict[str, Any] = json.loads(GOLDEN_PATH.read_text())


def test_the_golden_covers_every_preset() -> None:
    assert set(GOLDEN) == {"(defaults)", *PRESETS}


def test_defaults_match_the_golden() -> None:
    assert json.dumps(RunConfig().to_dict()) == json.dumps(GOLDEN["(defaults)"])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_resolves_to_the_golden_dict(name: str) -> None:
    resolved = resolve_config(preset=name).to_dict()
    # Compared as JSON text: equal values AND equal key order.
    assert json.dumps(resolved) == json.dumps(GOLDEN[name])
    assert json.dumps(RunConfig.from_dict(GOLDEN[name]).to_dict()) == json.dumps(GOLDEN[name])
