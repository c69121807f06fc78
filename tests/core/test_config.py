"""Run configuration: defaults, round trip, overrides, and errors that name the field (section 9)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from treegrpo.config import (
    ConfigError,
    RunConfig,
    TreeConfig,
    field_help,
    parse_assignment,
    resolve_config,
)
from treegrpo.presets import PRESETS, preset_dict


def error_field(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(data)
    return info.value.field


def test_defaults_validate() -> None:
    cfg = RunConfig()
    assert cfg.algorithm == "treegrpo"
    assert (cfg.tree.k, cfg.tree.depth, cfg.sampling.steps) == (3, 3, 10)
    # Null: the SDE's own eta (0.7 for the Flow-GRPO SDE TreeGRPO uses), set by the algorithm.
    assert cfg.sampling.eta is None and cfg.sampling.grid == "model"
    assert cfg.train.clip_range == 1e-4 and cfg.train.adv_clip == 5.0
    # The product's default is the shipped digits model with its judge.
    assert (cfg.model, cfg.prompts) == ("digits", "digits")
    assert cfg.reward_weights == {"digit_judge": 1.0}
    assert RunConfig.from_dict({}) == cfg


def test_round_trip_through_a_dict() -> None:
    cfg = RunConfig.from_dict(
        {
            "algorithm": "mixgrpo",
            "reward": {"brightness": 0.8, "contrast": 0.2},
            "prompts": ["a red square", "a blue circle"],
            "eval_prompts": ["a green dot"],
            "tree": {"k": 2, "depth": 4, "backup": "logprob_softmax"},
            "flat": {"window": 4},
            "train": {"lr": 3e-4, "loss_agg": "mean"},
        }
    )
    data = cfg.to_dict()
    assert data["reward"] == {"brightness": 0.8, "contrast": 0.2}
    assert data["prompts"] == ["a red square", "a blue circle"]
    assert data["tree"]["backup"] == "logprob_softmax"
    assert RunConfig.from_dict(data) == cfg
    assert RunConfig.from_dict(RunConfig().to_dict()) == RunConfig()


def test_dotted_and_nested_overrides_merge() -> None:
    cfg = RunConfig.from_dict({"tree.k": 4, "tree": {"depth": 2}, "train": {"lr": 1e-4}})
    assert (cfg.tree.k, cfg.tree.depth, cfg.train.lr) == (4, 2, 1e-4)
    resolved = resolve_config(
        preset="tiny-treegrpo",
        overrides={"tree": {"k": 3}, "sampling.steps": 8},
        assignments=["tree.backup=depth_norm", "train.clip_range=0.1"],
    )
    assert resolved.tree.k == 3 and resolved.tree.depth == 2  # preset depth kept
    assert resolved.sampling.steps == 8 and resolved.sampling.cfg_scale == 2.0
    assert resolved.tree.backup == "depth_norm" and resolved.train.clip_range == 0.1
    assert resolved.model == "tiny-random"


def test_assignments_win_over_overrides_and_presets() -> None:
    cfg = resolve_config(preset="tiny-treegrpo", overrides={"tree.k": 3}, assignments=["tree.k=4"])
    assert cfg.tree.k == 4


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"learning_rate": 1.0}, "learning_rate"),
        ({"tree.kk": 2}, "tree.kk"),
        ({"tree": {"kk": 2}}, "tree.kk"),
        ({"train": {"lr": 1e-4, "beta": 0.1}}, "train.beta"),
    ],
)
def test_unknown_keys_raise_naming_the_field(data: dict[str, Any], field: str) -> None:
    assert error_field(data) == field


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (
            {"tree.window": "fixed", "tree.window_start": 8, "tree.depth": 3, "sampling.steps": 10},
            "tree.window_start",
        ),
        ({"tree.depth": 11, "sampling.steps": 10}, "tree.depth"),
        ({"tree.k": 1}, "tree.k"),
        ({"train.lr": 0.0}, "train.lr"),
        ({"train.lr": -1e-5}, "train.lr"),
        ({"sampling.eta": 0.0}, "sampling.eta"),
        ({"sampling.eta": -0.5}, "sampling.eta"),
        ({"device": "gpu"}, "device"),
        ({"device": "cuda:x"}, "device"),
        ({"reward": "aesthetics"}, "reward"),
        ({"reward": {"brightness": 0.5, "nope": 0.5}}, "reward.nope"),
        ({"reward": {"brightness": 0.0}}, "reward.brightness"),
        ({"model": "sdxl"}, "model"),
        ({"prompts": ["fine", "x" * 501]}, "prompts[1]"),
        ({"prompts": []}, "prompts"),
        ({"tree.k": 2.5}, "tree.k"),
        ({"algorithm": "ppo"}, "algorithm"),
        ({"tree.backup": "max"}, "tree.backup"),
        ({"tree.window_ratio": 1.0}, "tree.window_ratio"),
        ({"train.loss_agg": "max"}, "train.loss_agg"),
    ],
)
def test_impossible_settings_raise_naming_the_field(data: dict[str, Any], field: str) -> None:
    assert error_field(data) == field


def test_error_message_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^tree\.k: "):
        RunConfig.from_dict({"tree.k": 1})


def test_boundary_values_are_accepted() -> None:
    cfg = RunConfig.from_dict(
        {
            "tree": {"window": "fixed", "window_start": 6, "depth": 3},
            "sampling": {"steps": 10},
            "prompts": ["x" * 500],
            "device": "cuda:1",
            "model": "./models/sd3-medium",
        }
    )
    assert cfg.tree.window_start == 6 and cfg.device == "cuda:1"


def test_sections_validate_on_their_own() -> None:
    with pytest.raises(ConfigError) as info:
        TreeConfig(k=1)
    assert info.value.field == "tree.k"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates(name: str) -> None:
    cfg = resolve_config(preset=name)
    assert cfg.algorithm == PRESETS[name]["algorithm"]


def test_baseline_presets_follow_their_authors_and_matched_ones_the_tree() -> None:
    # Authors' group sizes (DanceGRPO 12, Flow-GRPO 24, MixGRPO 12); `-matched` presets make
    # as many images per iteration as the tree (G = k^d).
    assert resolve_config(preset="digits-dancegrpo").flat.group_size == 12
    assert resolve_config(preset="digits-flowgrpo").flat.group_size == 24
    assert resolve_config(preset="digits-mixgrpo").flat.window == 4
    for name in PRESETS:
        cfg = resolve_config(preset=name)
        assert cfg.eval_prompts is not None and cfg.eval_prompts != cfg.prompts, name
        if name.endswith("-matched") or name.startswith("tiny-"):
            assert cfg.flat.group_size == cfg.tree.k**cfg.tree.depth, name
        data = preset_dict(name)
        assert "eta" not in data.get("sampling", {}), name  # the SDE's own eta


def test_unknown_preset_raises() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(preset="nope")
    assert info.value.field == "preset"


def test_preset_dict_is_a_copy() -> None:
    preset_dict("tiny-treegrpo")["tree"]["k"] = 99
    assert PRESETS["tiny-treegrpo"]["tree"]["k"] == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tree.k=4", ("tree.k", 4)),
        ("sampling.eta=0.5", ("sampling.eta", 0.5)),
        ("train.lr=1.0e-4", ("train.lr", 1e-4)),
        ("train.grad_checkpointing=true", ("train.grad_checkpointing", True)),
        ("model=tiny-random", ("model", "tiny-random")),
        ("prompts=[a cat, a dog]", ("prompts", ["a cat", "a dog"])),
        (
            "reward={brightness: 0.8, contrast: 0.2}",
            ("reward", {"brightness": 0.8, "contrast": 0.2}),
        ),
        ("eval_prompts=null", ("eval_prompts", None)),
        (" tree.backup = mean", ("tree.backup", "mean")),
    ],
)
def test_parse_assignment_parses_yaml_values(text: str, expected: tuple[str, Any]) -> None:
    assert parse_assignment(text) == expected


def test_parse_assignment_reads_exponent_floats() -> None:
    # `--set train.lr=1e-5` is how anyone writes a learning rate. PyYAML's YAML 1.1 resolver reads
    # "1e-5" (no dot) as a string, which the config then rejects ("expected a number").
    assert parse_assignment("train.lr=1e-5") == ("train.lr", 1e-5)
    assert resolve_config(assignments=["train.lr=1e-5"]).train.lr == 1e-5


def test_parse_assignment_needs_an_equals_sign() -> None:
    with pytest.raises(ConfigError):
        parse_assignment("tree.k")


def test_every_field_has_help() -> None:
    help_text = field_help()
    assert "tree.k" in help_text and "train.lr" in help_text
    assert all(text for text in help_text.values()), [k for k, v in help_text.items() if not v]


def test_config_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "import treegrpo.config, treegrpo.presets, treegrpo.algorithm_names, treegrpo.epochs\n"
        "from treegrpo.config import RunConfig, resolve_config\n"
        "from treegrpo.presets import PRESETS\n"
        "for name in PRESETS:\n"
        "    RunConfig.from_dict(resolve_config(preset=name).to_dict())\n"
        "resolve_config(assignments=['reward={brightness: 1, contrast: 1}'])\n"
        "heavy = [m for m in ('torch', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_config_presets_and_secrets_form_no_import_circle() -> None:
    # grimp also sees imports inside functions, so a circle hidden by a lazy import counts too.
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("treegrpo")
    modules = sorted(
        m
        for m in graph.modules
        if m.startswith("treegrpo.config") or m in ("treegrpo.presets", "treegrpo.secrets")
    )
    circles = [
        (a, b)
        for i, a in enumerate(modules)
        for b in modules[i + 1 :]
        if graph.chain_exists(importer=a, imported=b) and graph.chain_exists(importer=b, imported=a)
    ]
    assert circles == []


@pytest.mark.parametrize(
    "first",
    ["treegrpo.secrets", "treegrpo.presets", "treegrpo.config.presets", "treegrpo.config.fields"],
)
def test_config_presets_and_secrets_import_in_any_order(first: str) -> None:
    # No import circle: whichever module a process imports first, all of them load.
    code = f"import {first}\nimport treegrpo.config, treegrpo.presets, treegrpo.secrets\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_docs_config_table_is_current() -> None:
    from pathlib import Path

    from treegrpo.config import settings_table

    doc = (Path(__file__).parents[2] / "docs" / "CONFIG.md").read_text()
    assert doc.endswith(settings_table()), "regenerate docs/CONFIG.md from settings_table()"


def test_a_null_lr_means_lora_lr_with_lora_and_full_lr_without() -> None:
    # A LoRA run at a full fine-tune's step size learns nothing (issue 26: 0.75910 -> 0.75914).
    lora = resolve_config(preset="tiny-treegrpo", overrides={"train": {"lr": None, "lora_rank": 4}})
    full = resolve_config(preset="tiny-treegrpo", overrides={"train": {"lr": None, "lora_rank": 0}})
    assert lora.train.effective_lr == lora.train.lora_lr == 3e-4
    assert full.train.effective_lr == full.train.full_lr != full.train.lora_lr
    chosen = resolve_config(
        preset="tiny-treegrpo", overrides={"train.lr": 2e-3, "train.lora_rank": 4}
    )
    assert chosen.train.effective_lr == 2e-3
