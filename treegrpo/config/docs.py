"""What the settings mean and what a user can choose: CLI help, docs/CONFIG.md, the API catalog.

The "allowed" column comes from each setting's check object (fields.py), so the table says
what the validation does.
"""

from __future__ import annotations

import json
from typing import Any

from treegrpo.config.fields import allowed_text
from treegrpo.config.presets import PRESETS
from treegrpo.config.resolve import resolve_config
from treegrpo.config.run import RunConfig, declared_settings
from treegrpo.config.values import BUILTIN_MODELS
from treegrpo.prompts import PROMPT_SETS
from treegrpo.rewards.names import REWARD_NAMES


def field_help() -> dict[str, str]:
    """Dotted name -> help text, for CLI help and docs."""
    return {name: spec.metadata["help"] for name, spec in declared_settings().items()}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def settings_table() -> str:
    """Markdown table of every setting: dotted name, default, allowed values, meaning."""
    defaults = RunConfig().to_dict()
    rows = ["| setting | default | allowed | meaning |", "|---|---|---|---|"]
    for name, spec in declared_settings().items():
        head, _, rest = name.partition(".")
        value = defaults[head][rest] if rest else defaults[head]
        rows.append(
            f"| `{name}` | `{json.dumps(value)}` | {_cell(allowed_text(spec))} "
            f"| {_cell(spec.metadata['help'])} |"
        )
    return "\n".join(rows) + "\n"


def catalog() -> dict[str, Any]:
    """What a user can choose, for the API's /models, /rewards and /presets (torch-free)."""
    return {
        "models": list(BUILTIN_MODELS),
        "rewards": list(REWARD_NAMES),
        "prompt_sets": {name: list(prompts) for name, prompts in PROMPT_SETS.items()},
        "presets": {name: resolve_config(preset=name).to_dict() for name in PRESETS},
    }
