"""Typed, frozen, validated run configuration. Torch-free on purpose.

The API validates job configs with these classes, so this package imports nothing heavy: no
torch, no numpy. One vocabulary serves presets, `--set key=value`, the REST API and the docs
(docs/CONFIG.md). Each setting is declared once, with its default, help text and check
(fields.py); unknown names and impossible values raise `ConfigError`, which names the dotted
field and says what is wrong.

    cfg = resolve_config(preset="tiny-treegrpo", overrides={"tree.k": 4})
    cfg.to_dict()  # plain JSON, round-trips through RunConfig.from_dict

Modules: fields (how a setting is declared and checked), values (model, prompts, rewards,
trackers), sections and run (the schema), merge, presets and resolve (from what a user wrote to
a RunConfig), docs (help, the settings table, the API catalog). The names below are the public
surface (declaring a setting: treegrpo.config.fields); `treegrpo.epochs` and
`treegrpo.algorithm_names` are re-exported for older callers.
"""

from treegrpo.algorithm_names import ALGORITHMS, Algorithm
from treegrpo.config.docs import catalog, field_help, settings_table
from treegrpo.config.fields import MAX_NAME_CHARS, _bool, _choice, _float, _int, _text
from treegrpo.config.merge import deep_merge
from treegrpo.config.resolve import config_errors, load_yaml, parse_assignment, resolve_config
from treegrpo.config.run import DTYPES, MAX_GPUS, DType, RunConfig, expand_dotted
from treegrpo.config.sections import (
    BACKUPS,
    DEFAULT_CFG_SCALE,
    FLOW_SDES,
    GRIDS,
    KL_FORMS,
    LOSS_AGGREGATIONS,
    MAX_IMAGE_SIDE,
    MAX_LEAVES_PER_TREE,
    MAX_STEPS,
    SD_EVAL_STEPS,
    WEIGHTS_DTYPES,
    WINDOW_SCHEDULES,
    Backup,
    EvalConfig,
    FlatConfig,
    FlowSDEName,
    GridName,
    KLForm,
    LossAggregation,
    SamplingConfig,
    TrackingConfig,
    TrainConfig,
    TreeConfig,
    WeightsDtype,
    WindowSchedule,
)
from treegrpo.config.values import (
    BUILTIN_MODELS,
    MAX_PROMPT_CHARS,
    MAX_PROMPTS,
    TRACKER_PACKAGES,
    TRACKERS,
    missing_tracker_packages,
)
from treegrpo.epochs import (
    is_checkpoint_epoch,
    is_gallery_epoch,
    is_tree_epoch,
    logging_schedule,
)
from treegrpo.errors import ConfigError

__all__ = [
    "ALGORITHMS",
    "BACKUPS",
    "BUILTIN_MODELS",
    "DEFAULT_CFG_SCALE",
    "DTYPES",
    "FLOW_SDES",
    "GRIDS",
    "KL_FORMS",
    "LOSS_AGGREGATIONS",
    "MAX_GPUS",
    "MAX_IMAGE_SIDE",
    "MAX_LEAVES_PER_TREE",
    "MAX_NAME_CHARS",
    "MAX_PROMPTS",
    "MAX_PROMPT_CHARS",
    "MAX_STEPS",
    "SD_EVAL_STEPS",
    "TRACKERS",
    "TRACKER_PACKAGES",
    "WEIGHTS_DTYPES",
    "WINDOW_SCHEDULES",
    "Algorithm",
    "Backup",
    "ConfigError",
    "DType",
    "EvalConfig",
    "FlatConfig",
    "FlowSDEName",
    "GridName",
    "KLForm",
    "LossAggregation",
    "RunConfig",
    "SamplingConfig",
    "TrackingConfig",
    "TrainConfig",
    "TreeConfig",
    "WeightsDtype",
    "WindowSchedule",
    "_bool",
    "_choice",
    "_float",
    "_int",
    "_text",
    "catalog",
    "config_errors",
    "deep_merge",
    "expand_dotted",
    "field_help",
    "is_checkpoint_epoch",
    "is_gallery_epoch",
    "is_tree_epoch",
    "load_yaml",
    "logging_schedule",
    "missing_tracker_packages",
    "parse_assignment",
    "resolve_config",
    "settings_table",
]
