"""RunConfig: the whole run's settings, its cross-setting rules, and its plain-dict form."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from treegrpo.algorithm_names import ALGORITHMS, WINDOW_RULES, Algorithm
from treegrpo.config.fields import Choice, Int, Nullable, Section, section, setting
from treegrpo.config.merge import deep_merge
from treegrpo.config.sections import (
    SD_EVAL_STEPS,
    EvalConfig,
    FlatConfig,
    SamplingConfig,
    TrackingConfig,
    TrainConfig,
    TreeConfig,
)
from treegrpo.config.values import (
    BUILTIN_MODELS,
    MAX_PROMPTS,
    Device,
    Model,
    Prompts,
    Reward,
    RewardOptions,
    Trackers,
)
from treegrpo.datasets.ref import DatasetRef
from treegrpo.errors import ConfigError

MAX_GPUS = 64
MAX_NODES = 64

DType = Literal["float32", "bfloat16", "float16"]
DTYPES: tuple[str, ...] = get_args(DType)


@dataclass(frozen=True)
class RunConfig(Section):
    algorithm: Algorithm = setting(
        "treegrpo", "treegrpo, dancegrpo, flowgrpo or mixgrpo.", Choice(ALGORITHMS)
    )
    model: str = setting(
        "digits",
        "digits, digits-ddim, tiny-random, tiny-random-ddim, a local diffusers folder or a "
        "hub id ORG/NAME[@REV] in the local Hugging Face cache.",
        Model(),
    )
    reward: str | tuple[tuple[str, float], ...] = setting(
        "digit_judge", "A reward name, or {name: weight, ...}.", Reward()
    )
    reward_options: dict[str, dict[str, Any]] = setting(
        {},
        "Per-reward options, e.g. {clipscore: {path: /models/clip}}; {server: URL} scores "
        "that reward on its reward-serve. No secret values: name them with <field>_env or "
        "<field>_secret (docs/API.md).",
        RewardOptions(),
    )
    reward_workers: int = setting(
        0,
        "Threads that score chunks of trees while later chunks grow (TreeGRPO); 0 = score "
        "after the rollout, or 2 when a reward is remote. Results equal serial scoring.",
        Int(0, 64),
    )
    prompts: str | tuple[str, ...] | DatasetRef = setting(
        "digits",
        "A prompt-set name, a list of prompts, or a dataset split {dataset: NAME_OR_ID, "
        "split: train} (each row's other columns reach the rewards as its metadata).",
        Prompts(),
    )
    prompts_per_epoch: int = setting(4, "Prompts (trees) per epoch.", Int(1, MAX_PROMPTS))
    eval_prompts: str | tuple[str, ...] | DatasetRef | None = setting(
        None,
        "Held-out prompts for galleries (a set, a list or {dataset: NAME_OR_ID, split: "
        "test}); null = the first prompts.",
        Nullable(Prompts("test")),
    )
    epochs: int = setting(10, "Training epochs (iterations).", Int(1, 10_000_000))
    seed: int = setting(0, "Seeds every random choice of the run.", Int(0, 2**31 - 1))
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.", Device())
    gpus: int = setting(
        1,
        "Processes (GPUs) per machine; > 1 runs torch.distributed ranks (started by "
        "`accelerate launch` on one machine, torchrun on several; gloo on the CPU), each "
        "with an equal share of the prompts.",
        Int(1, MAX_GPUS),
        note="nodes x gpus divides prompts_per_epoch",
    )
    nodes: int = setting(
        1,
        "Machines the job spans, each running `gpus` processes under one torchrun agent "
        "(c10d rendezvous; in the studio, the workers form the gang). The gradient is "
        "replicated across machines.",
        Int(1, MAX_NODES),
        note="nodes x gpus divides prompts_per_epoch",
    )
    dtype: DType = setting(
        "float32", "Model dtype; step math always runs in float32.", Choice(DTYPES)
    )
    checkpoint_every: int = setting(
        1, "Epochs between checkpoints; the final epoch always saves one.", Int(0)
    )
    log_tree_every: int = setting(
        0,
        "Epochs between logged trees (with images); the final epoch always logs its trees.",
        Int(0),
    )
    sample_every: int = setting(
        0,
        "Epochs between sample galleries (epoch 0 too); the final epoch always has one.",
        Int(0),
    )
    sampling: SamplingConfig = section(SamplingConfig)
    tree: TreeConfig = section(TreeConfig)
    flat: FlatConfig = section(FlatConfig)
    train: TrainConfig = section(TrainConfig)
    eval: EvalConfig = section(EvalConfig)
    trackers: tuple[str, ...] = setting(
        (),
        "Experiment trackers, any of tensorboard, wandb, mlflow (offline-first; optional "
        "extras: pip install 'treegrpo-studio[trackers]').",
        Trackers(),
    )
    tracking: TrackingConfig = section(TrackingConfig)

    # Filled in below the class from the `section(...)` fields.
    SECTIONS: ClassVar[dict[str, type[Any]]] = {}

    @property
    def world_size(self) -> int:
        """Processes of the job in all: `gpus` on each of `nodes` machines."""
        return self.nodes * self.gpus

    def check_together(self) -> None:
        used = set(self.reward_weights) | set(self.eval_reward_weights)
        unused = sorted(set(self.reward_options) - used)
        if unused:
            raise ConfigError(
                f"reward_options.{unused[0]}", "options given for a reward the run does not use"
            )
        if self.prompts_per_epoch % self.world_size:
            field = "nodes" if self.nodes > 1 else "gpus"
            raise ConfigError(
                field,
                f"prompts_per_epoch = {self.prompts_per_epoch} must be divisible by nodes x gpus"
                f" = {self.nodes} x {self.gpus}: each process rolls out an equal share of the "
                "epoch's prompts",
            )
        if self.train.weights_dtype != "float32" and self.dtype != self.train.weights_dtype:
            raise ConfigError(
                "train.weights_dtype",
                f"{self.train.weights_dtype} weights run under {self.train.weights_dtype} "
                f"autocast: set dtype: {self.train.weights_dtype} too (got {self.dtype})",
            )
        if self.train.sharding == "fsdp" and self.train.weights_dtype != "float32":
            raise ConfigError(
                "train.sharding",
                "under fsdp the float32 weight shards are the master weights and compute runs "
                f"in dtype ({self.dtype}): set train.weights_dtype: float32",
            )
        if self.train.ema and self.train.sharding == "fsdp":
            raise ConfigError(
                "train.ema", "the EMA is not kept for sharded (fsdp) runs yet: set train.ema: false"
            )
        self._check_window()

    def _check_window(self) -> None:
        rule = WINDOW_RULES.get(self.algorithm)
        if rule is None:
            return
        steps = self.sampling.steps
        width = self.get_setting(rule.width_setting)
        last_start = rule.last_start(steps, width)
        if last_start < 0:
            raise ConfigError(
                rule.width_setting,
                f"a window of {width} steps does not fit in sampling.steps = {steps}{rule.fit}",
            )
        if rule.start_setting is None:
            return
        start = self.get_setting(rule.start_setting)
        if self.tree.window in ("fixed", "shift") and start > last_start:
            raise ConfigError(
                rule.start_setting,
                f"window [{start}, {start + width}) is past the "
                f"last valid start {last_start} ({steps} steps; the window ends before the last "
                "step)",
            )

    # -- reading -----------------------------------------------------------------------------

    def get_setting(self, dotted: str) -> Any:
        """The value of a dotted setting, e.g. "tree.depth"."""
        node: Any = self
        for part in dotted.split("."):
            node = getattr(node, part)
        return node

    @property
    def reward_weights(self) -> dict[str, float]:
        """The reward as {name: weight}; a single name has weight 1."""
        if isinstance(self.reward, str):
            return {self.reward: 1.0}
        return dict(self.reward)

    @property
    def eval_reward_weights(self) -> dict[str, float]:
        """The rewards an evaluation reports: eval.rewards, else the training reward."""
        if self.eval.rewards is None:
            return self.reward_weights
        if isinstance(self.eval.rewards, str):
            return {self.eval.rewards: 1.0}
        return dict(self.eval.rewards)

    @property
    def eval_steps(self) -> int:
        """eval.steps, or its default: the training steps on a built-in model, else 40."""
        if self.eval.steps is not None:
            return self.eval.steps
        return self.sampling.steps if self.model in BUILTIN_MODELS else SD_EVAL_STEPS

    @property
    def window_width(self) -> int:
        """SDE window width of the algorithm: tree depth, MixGRPO's window, or all steps."""
        rule = WINDOW_RULES.get(self.algorithm)
        return int(self.get_setting(rule.width_setting)) if rule else self.sampling.steps

    # -- conversion --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able nested dict; `RunConfig.from_dict(cfg.to_dict()) == cfg`."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, EvalConfig):
                section_dict = dataclasses.asdict(value)
                rewards = section_dict["rewards"]
                if rewards is not None and not isinstance(rewards, str):
                    section_dict["rewards"] = dict(rewards)  # as `reward`: {name: weight}
                out[f.name] = section_dict
            elif dataclasses.is_dataclass(value):
                out[f.name] = dataclasses.asdict(value)  # type: ignore[arg-type]
            elif f.name == "reward" and not isinstance(value, str):
                out[f.name] = dict(value)
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            elif isinstance(value, dict):
                out[f.name] = {key: dict(inner) for key, inner in value.items()}
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Build from nested and/or dotted keys. Unknown keys raise ConfigError."""
        nested = expand_dotted(data)
        top_names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in nested.items():
            if key not in top_names:
                raise ConfigError(key, _unknown_message(key, top_names))
            section_cls = cls.SECTIONS.get(key)
            if section_cls is None:
                kwargs[key] = value
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(key, f"expected a mapping of {key}.* settings, got {value!r}")
            names = {f.name for f in dataclasses.fields(section_cls)}
            for sub in value:
                if sub not in names:
                    raise ConfigError(f"{key}.{sub}", _unknown_message(sub, names))
            kwargs[key] = section_cls(**value)
        return cls(**kwargs)


RunConfig.SECTIONS = {
    f.name: f.metadata["section"] for f in dataclasses.fields(RunConfig) if "section" in f.metadata
}


def declared_settings() -> dict[str, dataclasses.Field[Any]]:
    """Every setting by dotted name, in declaration order (sections expanded in place)."""
    out: dict[str, dataclasses.Field[Any]] = {}
    for f in dataclasses.fields(RunConfig):
        section_cls = RunConfig.SECTIONS.get(f.name)
        if section_cls is None:
            out[f.name] = f
            continue
        for sub in dataclasses.fields(section_cls):
            out[f"{f.name}.{sub.name}"] = sub
    return out


def _unknown_message(key: str, known: Iterable[str]) -> str:
    return f"unknown setting {key!r}; known: {', '.join(sorted(known))}"


def expand_dotted(data: Mapping[str, Any]) -> dict[str, Any]:
    """{"tree.k": 4, "train": {"lr": 1e-4}} -> {"tree": {"k": 4}, "train": {"lr": 1e-4}}."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(str(key), "setting names must be non-empty strings")
        if isinstance(value, Mapping) and key in RunConfig.SECTIONS:
            value = expand_dotted(value)
        head, _, rest = key.partition(".")
        if rest:
            value = expand_dotted({rest: value})
        if head in out and isinstance(out[head], dict) and isinstance(value, dict):
            out[head] = deep_merge(out[head], value)
        else:
            out[head] = value
    return out
