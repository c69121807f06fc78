"""The submit form's fields, filled from a preset and checked before anything is sent (pure).

Fields are dotted config names (docs/TREEGRPO.md §9); the form sends only the values that
differ from the chosen preset, so a job records the preset and its real overrides. The API stays
the judge of every range: its 422 messages come back per field (`ApiError.field_errors`) and are
shown under the same field as the checks made here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# The one algorithm that grows trees; the others the API serves are flat baselines.
TREE_ALGORITHM = "treegrpo"
WINDOWS = ("random", "shift", "fixed")
KINDS = ("train", "sample", "evaluate")
MAX_NAME = 200

FieldKind = Literal["int", "float", "choice", "text", "reward", "prompts"]


@dataclass(frozen=True)
class FormField:
    name: str  # dotted config name
    label: str
    kind: FieldKind
    minimum: float | None = None
    exclusive_min: bool = False
    choices: tuple[str, ...] = ()
    info: str = ""


FIELDS: tuple[FormField, ...] = (
    # Choices: the algorithms of the presets the API serves (served_algorithms).
    FormField("algorithm", "algorithm", "choice"),
    FormField("model", "model", "choice", info="a shipped model or a local folder"),
    FormField("reward", "reward", "reward", info="a name, or name=weight, name=weight"),
    FormField("prompts", "prompts", "prompts", info="a prompt-set name, or one prompt per line"),
    FormField("epochs", "epochs", "int", minimum=1),
    FormField("prompts_per_epoch", "prompts per epoch", "int", minimum=1),
    FormField("seed", "seed", "int", minimum=0),
    FormField("sampling.steps", "sampling.steps (T)", "int", minimum=1),
    FormField("sampling.cfg_scale", "sampling.cfg_scale", "float", minimum=0),
    FormField("sampling.eta", "sampling.eta", "float", minimum=0),
    FormField("tree.k", "tree.k (branching)", "int", minimum=1),
    FormField("tree.depth", "tree.depth (window d)", "int", minimum=1),
    FormField("tree.window", "tree.window", "choice", choices=WINDOWS),
    FormField("flat.group_size", "flat.group_size (baselines)", "int", minimum=1),
    FormField("train.lr", "train.lr", "float", minimum=0, exclusive_min=True),
    FormField("train.clip_range", "train.clip_range", "float", minimum=0, exclusive_min=True),
    FormField("log_tree_every", "log a tree every (epochs)", "int", minimum=0),
    FormField("sample_every", "gallery every (epochs)", "int", minimum=0),
    FormField("checkpoint_every", "checkpoint every (epochs)", "int", minimum=0),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)
TREE_ONLY = frozenset({"tree.k", "tree.depth", "tree.window", "log_tree_every"})
FLAT_ONLY = frozenset({"flat.group_size"})


def served_algorithms(presets: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """The algorithms of the API's presets (GET /presets), in order of first appearance. The
    core defines presets for every algorithm it accepts, so the form restates no list."""
    names = (config.get("algorithm") for config in presets)
    return tuple(dict.fromkeys(name for name in names if isinstance(name, str) and name))


def fields_for(algorithm: str, algorithms: Collection[str]) -> frozenset[str]:
    """The form fields that mean something for `algorithm`, one of the served `algorithms`:
    TreeGRPO has no flat group, the flat baselines (DanceGRPO, Flow-GRPO, MixGRPO) log no
    tree. Unknown: all of them."""
    if algorithm == TREE_ALGORITHM:
        hidden = FLAT_ONLY
    elif algorithm in algorithms:
        hidden = TREE_ONLY
    else:
        hidden = frozenset()
    return frozenset(FIELD_NAMES) - hidden


# Form-level slots that also receive messages.
NAME_SLOT, ADVANCED_SLOT, SOURCE_SLOT = "name", "advanced", "source_job_id"


def get_dotted(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def display_value(spec: FormField, value: Any) -> Any:
    """A config value as the form shows it."""
    if value is None:
        return None
    if spec.kind == "reward" and isinstance(value, Mapping):
        return ", ".join(
            f"{k}={v:g}" if isinstance(v, float | int) else f"{k}={v}" for k, v in value.items()
        )
    if spec.kind == "reward" and isinstance(value, list | tuple):
        return ", ".join(
            f"{item[0]}={item[1]:g}"
            if isinstance(item, list | tuple) and len(item) == 2
            else str(item)
            for item in value
        )
    if spec.kind == "prompts" and isinstance(value, list | tuple):
        return "\n".join(str(v) for v in value)
    if spec.kind in ("int", "float"):
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    return str(value)


def preset_values(config: Mapping[str, Any]) -> dict[str, Any]:
    return {spec.name: display_value(spec, get_dotted(config, spec.name)) for spec in FIELDS}


def parse_reward(text: str) -> str | dict[str, float]:
    """'digit_judge' -> 'digit_judge'; 'hps=0.8, clipscore=0.2' -> {'hps': 0.8, 'clipscore': 0.2}."""
    text = text.strip()
    if "=" not in text and ":" not in text and "," not in text:
        return text
    out: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        sep = "=" if "=" in part else ":"
        name, _, weight = part.partition(sep)
        if not name.strip() or not weight.strip():
            raise ValueError(f"'{part}' is not name=weight")
        try:
            out[name.strip()] = float(weight)
        except ValueError as exc:
            raise ValueError(f"the weight of '{name.strip()}' is not a number") from exc
    if not out:
        raise ValueError("name at least one reward")
    return out


def parse_prompts(text: str, prompt_sets: Sequence[str] = ()) -> str | list[str]:
    """A known prompt-set name (or any single word without spaces) stays a name; otherwise one
    prompt per non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("give a prompt-set name or at least one prompt")
    if len(lines) == 1 and (
        lines[0] in prompt_sets or (not prompt_sets and " " not in lines[0] and "<" not in lines[0])
    ):
        return lines[0]
    return lines


def _number(spec: FormField, raw: Any) -> int | float:
    if isinstance(raw, str):
        raw = raw.strip()
        if not raw:
            raise ValueError("required")
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError("must be a number") from exc
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    if spec.kind == "int":
        if value != int(value):
            raise ValueError("must be a whole number")
        value = int(value)
    if spec.minimum is not None:
        if spec.exclusive_min and value <= spec.minimum:
            raise ValueError(f"must be greater than {spec.minimum:g}")
        if not spec.exclusive_min and value < spec.minimum:
            raise ValueError(f"must be at least {spec.minimum:g}")
    return value


def parse_field(
    spec: FormField, raw: Any, prompt_sets: Sequence[str] = (), choices: Sequence[str] = ()
) -> Any:
    """The config value for the form's raw input (ValueError with a short message). `choices`
    are the ones the API serves for a choice field without fixed choices."""
    if spec.kind in ("int", "float"):
        return _number(spec, raw)
    text = "" if raw is None else str(raw)
    if not text.strip():
        raise ValueError("required")
    allowed = spec.choices or tuple(choices)
    if spec.kind == "choice" and allowed and text not in allowed:
        raise ValueError(f"choose one of: {', '.join(allowed)}")
    if spec.kind == "reward":
        return parse_reward(text)
    if spec.kind == "prompts":
        return parse_prompts(text, prompt_sets)
    return text.strip()


def parse_advanced(text: str) -> dict[str, Any]:
    """'train.kl_beta = 0.01' per line (values as JSON when they parse, else strings)."""
    out: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"line {number}: write dotted.name = value")
        value = value.strip()
        try:
            out[name.strip()] = json.loads(value)
        except ValueError:
            out[name.strip()] = value
    return out


def advanced_names(text: str) -> list[str]:
    """The dotted names the overrides box sets (empty when it does not parse)."""
    try:
        return list(parse_advanced(text))
    except ValueError:
        return []


@dataclass(frozen=True)
class FormResult:
    config: dict[str, Any]  # dotted overrides to send
    errors: dict[str, str]  # slot -> message (fields, name, advanced)


def build_request(
    raw: Mapping[str, Any],
    preset_config: Mapping[str, Any],
    *,
    name: str,
    advanced: str = "",
    prompt_sets: Sequence[str] = (),
    choices: Mapping[str, Sequence[str]] | None = None,
) -> FormResult:
    """Check every field; the overrides are the fields whose value differs from the preset's
    (fields left empty keep the preset's or the default's value). `choices`: served choices
    by field name, e.g. {"algorithm": served_algorithms(presets)}."""
    errors: dict[str, str] = {}
    config: dict[str, Any] = {}
    if len(name) > MAX_NAME:
        errors[NAME_SLOT] = f"at most {MAX_NAME} characters ({len(name)} given)"
    for spec in FIELDS:
        value = raw.get(spec.name)
        preset = get_dotted(preset_config, spec.name)
        empty = value is None or (isinstance(value, str) and not value.strip())
        if empty:
            continue  # the preset's (or the config default's) value applies
        try:
            parsed = parse_field(spec, value, prompt_sets, (choices or {}).get(spec.name, ()))
        except ValueError as exc:
            errors[spec.name] = str(exc)
            continue
        if preset is None or _normalised(spec, parsed) != _normalised(spec, preset):
            config[spec.name] = parsed
    try:
        config.update(parse_advanced(advanced))
    except ValueError as exc:
        errors[ADVANCED_SLOT] = str(exc)
    return FormResult(config=config, errors=errors)


def _normalised(spec: FormField, value: Any) -> Any:
    if spec.kind in ("int", "float"):
        try:
            return float(value)
        except (TypeError, ValueError):
            return value
    if spec.kind == "reward":
        if isinstance(value, Mapping):
            return tuple(sorted((str(k), float(v)) for k, v in value.items()))
        if isinstance(value, list | tuple):
            return tuple(sorted((str(k), float(v)) for k, v in value))
        return str(value)
    if spec.kind == "prompts":
        return tuple(value) if isinstance(value, list | tuple) else str(value)
    return str(value)


def slot_for(field: str, advanced_names: Sequence[str] = ()) -> str | None:
    """Which form slot shows the API's message for `field` (None: the form-level message)."""
    if field in FIELD_NAMES or field == NAME_SLOT:
        return field
    if field.startswith("params"):
        return SOURCE_SLOT
    for spec in FIELD_NAMES:
        if field.startswith(spec + "."):  # e.g. reward.hps -> reward
            return spec
    if field in advanced_names or any(field.startswith(a + ".") for a in advanced_names):
        return ADVANCED_SLOT
    return None
