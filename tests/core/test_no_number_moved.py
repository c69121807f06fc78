"""No number moved (issue 22): each digits preset, and tiny-treegrpo on two gloo processes, trained
at a fixed seed for two short epochs, logs bit-identical metrics, weights, optimizer state and
artifacts to the golden recorded on the code before the refactor (golden/record.py says what is
run and fingerprinted, and how to record it again)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _recorder() -> ModuleType:
    path = Path(__file__).with_name("golden") / "record.py"
    spec = importlib.util.spec_from_file_location("golden_record", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


record = _recorder()


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    here = record.platform()
    for data in record.goldens():
        if data["platform"] == here:
            return data  # type: ignore[no-any-return]
    recorded = [data["platform"] for data in record.goldens()]
    pytest.skip(
        f"goldens were recorded on {recorded}, this is {here}: float kernels differ between "
        "CPU models; record one here on the unrefactored commit (golden/record.py says how)"
    )


def test_the_golden_covers_every_digits_preset_and_two_processes() -> None:
    from treegrpo.presets import PRESETS

    digits = {name for name in PRESETS if name.startswith("digits-") and "matched" not in name}
    presets = {case.preset for case in record.CASES.values()}
    assert digits <= presets, digits - presets
    assert any(case.processes == 2 for case in record.CASES.values())


def test_a_changed_number_is_reported_by_its_path() -> None:
    golden = {"metrics": [{"epoch": 1, "metrics": {"loss": 0.5, "kl": 0.1}}], "w": {"a": "x"}}
    current = {"metrics": [{"epoch": 1, "metrics": {"loss": 0.5000000000000001}}], "w": {"a": "x"}}
    assert record.differences(golden, current) == [
        "/metrics/0/metrics/kl: missing now",
        "/metrics/0/metrics/loss: 0.5 -> 0.5000000000000001",
    ]
    assert record.differences(golden, golden) == []
    added = {
        "metrics": [{"epoch": 1, "metrics": {"loss": 0.5, "kl": 0.1, "new": 1.0}}],
        "w": {"a": "x"},
    }
    assert record.differences(golden, added) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(record.CASES))
def test_no_number_moved(name: str, golden: dict[str, Any], tmp_path: Path) -> None:
    current = record.run_case(record.CASES[name], tmp_path / "run")
    found = record.differences(golden["cases"][name], current)
    assert not found, f"{len(found)} values moved, first: " + "\n".join(found[:20])
