"""Setting declarations: each check object validates a value AND writes the docs' allowed text,
and a new knob is one `setting(...)` line (validated, documented, in the settings table)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import pytest

from treegrpo.algorithm_names import ALGORITHMS, WINDOW_RULES
from treegrpo.config import ConfigError, RunConfig, field_help, settings_table
from treegrpo.config.fields import (
    Bool,
    Choice,
    Float,
    Int,
    Nullable,
    Section,
    Text,
    allowed_text,
    number_text,
    setting,
)
from treegrpo.config.run import declared_settings
from treegrpo.config.values import Device, Prompts, Reward, Trackers
from treegrpo.presets import PRESETS


def refusal(check: Any, value: Any, field: str = "demo.knob") -> str:
    with pytest.raises(ConfigError) as info:
        check("demo.knob", value)
    assert info.value.field == field
    return info.value.reason


def test_int_range_validates_and_renders() -> None:
    check = Int(2, 16)
    assert check("demo.knob", 2) == 2 and check("demo.knob", 16) == 16
    assert refusal(check, 1) == "must be >= 2, got 1"
    assert refusal(check, 17) == "must be <= 16, got 17"
    assert refusal(check, True) == "expected an integer, got True"
    assert refusal(check, 3.0) == "expected an integer, got 3.0"
    assert check.allowed() == "2..16"
    assert Int(0).allowed() == ">= 0"
    assert Int(0, 2**31 - 1).allowed() == "0..2^31-1"
    assert Int(1, 10_000_000).allowed() == "1..10^7"


def test_float_bounds_open_and_closed() -> None:
    check = Float(0.0, 1.0, lo_open=True, hi_open=True)
    assert check("demo.knob", 0.5) == 0.5 and isinstance(check("demo.knob", 1e-9), float)
    assert refusal(check, 0) == "must be > 0.0, got 0.0"
    assert refusal(check, 1.0) == "must be < 1.0, got 1.0"
    assert refusal(check, float("nan")) == "must be finite, got nan"
    assert refusal(check, "0.5") == "expected a number, got '0.5'"
    assert check.allowed() == "(0, 1)"
    assert Float(0.0, 10.0).allowed() == "[0, 10]"
    assert Float(0.0, 1e6, lo_open=True).allowed() == "(0, 1e6]"
    assert Float(1.0).allowed() == ">= 1"
    assert Float(0.0, lo_open=True).allowed() == "> 0"
    assert Float(0.0, 10.0)("demo.knob", 10) == 10.0


def test_choice_bool_text_nullable() -> None:
    assert Choice(("a", "b"))("demo.knob", "b") == "b"
    assert refusal(Choice(("a", "b")), "c") == "must be one of a, b; got 'c'"
    assert Choice(("a", "b")).allowed() == "a | b"
    assert refusal(Bool(), 1) == "expected true or false, got 1"
    assert Bool().allowed() == "true | false"
    assert refusal(Text(max_chars=3), "abcd") == "must be at most 3 characters, got 4"
    assert refusal(Text(), "  ") == "must not be empty"
    assert Text("a URI", 9).allowed() == "a URI (<= 9 chars)"
    nullable = Nullable(Int(1, 5))
    assert nullable("demo.knob", None) is None and nullable("demo.knob", 5) == 5
    assert refusal(nullable, 0) == "must be >= 1, got 0"
    assert nullable.allowed() == "null | 1..5"


def test_domain_checks_store_their_canonical_form() -> None:
    assert Reward()("demo.knob", {"contrast": 1, "brightness": 2}) == (
        ("brightness", 2.0),
        ("contrast", 1.0),
    )
    weightless = refusal(Reward(), {"brightness": 0}, field="demo.knob.brightness")
    assert weightless == "must be > 0.0, got 0.0"
    assert Prompts()("demo.knob", ["a", "b"]) == ("a", "b")
    assert Trackers()("demo.knob", "wandb") == ("wandb",)
    assert Trackers()("demo.knob", ["wandb", "wandb", "mlflow"]) == ("wandb", "mlflow")
    assert refusal(Device(), "gpu") == "must be auto, cpu, cuda or cuda:N; got 'gpu'"
    assert Device().allowed() == "auto | cpu | cuda | cuda:N"


def test_number_text() -> None:
    assert [number_text(x) for x in (0.0, 10.0, 1e6, 1e-5, 0.5, 64)] == [
        "0",
        "10",
        "1e6",
        "1e-5",
        "0.5",
        "64",
    ]


def test_a_new_knob_is_one_line() -> None:
    @dataclasses.dataclass(frozen=True)
    class DemoConfig(Section):
        PREFIX: ClassVar[str] = "demo"

        knob: int = setting(3, "A demo knob.", Int(1, 9))
        scale: float = setting(1, "A demo scale.", Float(0.0, lo_open=True))

    assert DemoConfig().knob == 3
    assert DemoConfig(scale=2).scale == 2.0 and isinstance(DemoConfig(scale=2).scale, float)
    with pytest.raises(ConfigError) as info:
        DemoConfig(knob=10)
    assert (info.value.field, info.value.reason) == ("demo.knob", "must be <= 9, got 10")
    knob = {f.name: f for f in dataclasses.fields(DemoConfig)}["knob"]
    assert knob.metadata["help"] == "A demo knob." and allowed_text(knob) == "1..9"


def test_every_setting_is_declared_with_help_and_check_and_is_in_the_docs() -> None:
    settings = declared_settings()
    assert list(settings) == list(field_help())
    table = settings_table()
    doc = (Path(__file__).parents[2] / "docs" / "CONFIG.md").read_text()
    for name, spec in settings.items():
        assert spec.metadata["help"], name
        check = spec.metadata["check"]
        assert check.allowed(), name
        # The default itself passes the setting's own check.
        assert check(name, RunConfig().get_setting(name)) == RunConfig().get_setting(name), name
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))
        assert allowed_text(spec).replace("|", "\\|") in row, name
        assert row in doc, name


def test_the_docs_state_cross_setting_limits() -> None:
    settings = declared_settings()
    assert allowed_text(settings["gpus"]) == "1..64; nodes x gpus divides prompts_per_epoch"
    assert allowed_text(settings["nodes"]) == "1..64; nodes x gpus divides prompts_per_epoch"
    assert allowed_text(settings["sampling.max_batch"]) == ">= 0; >= 2 with CFG"


def test_every_algorithm_has_presets_and_window_rules_name_real_settings() -> None:
    # The frontend's algorithm list is the algorithms of the presets the API serves.
    assert {config["algorithm"] for config in PRESETS.values()} == set(ALGORITHMS)
    for rule in WINDOW_RULES.values():
        assert rule.width_setting in declared_settings()
        assert rule.start_setting is None or rule.start_setting in declared_settings()


def test_window_width_follows_the_rules() -> None:
    assert RunConfig.from_dict({"tree.depth": 2}).window_width == 2
    mix = RunConfig.from_dict({"algorithm": "mixgrpo", "flat.window": 5})
    assert mix.window_width == 5
    assert RunConfig.from_dict({"algorithm": "flowgrpo"}).window_width == 10
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"algorithm": "mixgrpo", "sampling.steps": 2})
    assert info.value.field == "flat.window"
    assert "(MixGRPO needs at least 3 steps)" in info.value.reason
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"tree": {"window": "fixed", "window_start": 7}})
    assert info.value.field == "tree.window_start"
    assert "past the last valid start 6" in info.value.reason
