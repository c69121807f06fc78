"""Typed, frozen, validated run configuration. Torch-free on purpose.

The API validates job configs with these classes, so this module must import nothing heavy: no
torch, no numpy. One vocabulary serves presets, `--set key=value`, the REST API and the docs
(TREEGRPO.md section 9). Every field's `help` metadata is its documentation; unknown names and
impossible values raise `ConfigError`, which names the dotted field and says what is wrong.

    cfg = resolve_config(preset="tiny-treegrpo", overrides={"tree.k": 4})
    cfg.to_dict()  # plain JSON, round-trips through RunConfig.from_dict
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

ALGORITHMS = ("treegrpo", "dancegrpo", "flowgrpo", "mixgrpo")
BACKUPS = ("mean", "logprob_softmax", "depth_norm")
WINDOW_SCHEDULES = ("random", "shift", "fixed")
LOSS_AGGREGATIONS = ("sum", "mean")
FLOW_SDES = ("flowgrpo", "dancegrpo")
GRIDS = ("model", "dancegrpo")
KL_FORMS = ("flowgrpo", "exact")
DTYPES = ("float32", "bfloat16", "float16")
WEIGHTS_DTYPES = ("float32", "bfloat16")
BUILTIN_MODELS = ("digits", "digits-ddim", "tiny-random", "tiny-random-ddim")

MAX_NAME_CHARS = 200
MAX_PROMPT_CHARS = 500
MAX_PROMPTS = 4096
MAX_LEAVES_PER_TREE = 4096
MAX_STEPS = 500  # RL fine-tuning samples with few steps (the paper: 10)
MAX_IMAGE_SIDE = 8192  # pixels; the model checks its own multiple and maximum
DEFAULT_CFG_SCALE = 4.5  # CFG of models that are not guidance-distilled (SD3 and Flow-GRPO's)
MAX_GPUS = 64

Algorithm = Literal["treegrpo", "dancegrpo", "flowgrpo", "mixgrpo"]
Backup = Literal["mean", "logprob_softmax", "depth_norm"]
WindowSchedule = Literal["random", "shift", "fixed"]
LossAggregation = Literal["sum", "mean"]
DType = Literal["float32", "bfloat16", "float16"]
FlowSDEName = Literal["flowgrpo", "dancegrpo"]
GridName = Literal["model", "dancegrpo"]
KLForm = Literal["flowgrpo", "exact"]
WeightsDtype = Literal["float32", "bfloat16"]


class ConfigError(ValueError):
    """An impossible or unknown setting. `field` is the dotted name, `reason` says what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _help(text: str) -> dict[str, str]:
    return {"help": text}


# ---------------------------------------------------------------------------------------------
# Value checks shared by the sections. Each raises ConfigError naming the field.


def _int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"expected an integer, got {value!r}")
    if lo is not None and value < lo:
        raise ConfigError(name, f"must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ConfigError(name, f"must be <= {hi}, got {value}")
    return value


def _float(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(name, f"expected a number, got {value!r}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(name, f"must be finite, got {value}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ConfigError(name, f"must be {'>' if lo_open else '>='} {lo}, got {value}")
    if hi is not None and value > hi:
        raise ConfigError(name, f"must be <= {hi}, got {value}")
    return value


def _choice(name: str, value: Any, choices: Iterable[str]) -> str:
    options = tuple(choices)
    if value not in options:
        raise ConfigError(name, f"must be one of {', '.join(options)}; got {value!r}")
    return str(value)


def _text(name: str, value: Any, max_chars: int = MAX_NAME_CHARS) -> str:
    if not isinstance(value, str):
        raise ConfigError(name, f"expected a string, got {value!r}")
    if not value.strip():
        raise ConfigError(name, "must not be empty")
    if len(value) > max_chars:
        raise ConfigError(name, f"must be at most {max_chars} characters, got {len(value)}")
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(name, f"expected true or false, got {value!r}")
    return value


def _prompts(name: str, value: Any) -> str | tuple[str, ...]:
    """A prompt-set name or a non-empty list of prompts."""
    if isinstance(value, str):
        from treegrpo.prompts import PROMPT_SETS

        return _choice(name, value, PROMPT_SETS)
    if isinstance(value, list | tuple):
        if not value:
            raise ConfigError(name, "must not be an empty list")
        if len(value) > MAX_PROMPTS:
            raise ConfigError(name, f"at most {MAX_PROMPTS} prompts, got {len(value)}")
        return tuple(_text(f"{name}[{i}]", p, MAX_PROMPT_CHARS) for i, p in enumerate(value))
    raise ConfigError(name, f"expected a prompt-set name or a list of prompts, got {value!r}")


def _reward(name: str, value: Any) -> str | tuple[tuple[str, float], ...]:
    """One reward name, or {name: weight} with positive weights (kept as sorted pairs)."""
    from treegrpo.rewards.names import REWARD_NAMES

    if isinstance(value, str):
        return _choice(name, value, REWARD_NAMES)
    if isinstance(value, Mapping):
        if not value:
            raise ConfigError(name, "must name at least one reward")
        pairs = []
        for key, weight in value.items():
            _choice(f"{name}.{key}", key, REWARD_NAMES)
            pairs.append((str(key), _float(f"{name}.{key}", weight, lo=0.0, lo_open=True)))
        return tuple(sorted(pairs))
    if isinstance(value, list | tuple) and all(
        isinstance(p, list | tuple) and len(p) == 2 for p in value
    ):
        return _reward(name, dict(value))
    raise ConfigError(name, f"expected a reward name or {{name: weight}}, got {value!r}")


def _reward_options(name: str, value: Any) -> dict[str, dict[str, Any]]:
    """{reward name: {option: scalar}}, e.g. a local model folder or a server URL."""
    from treegrpo.rewards.names import REWARD_NAMES
    from treegrpo.secrets import check_options

    if not isinstance(value, Mapping):
        raise ConfigError(name, f"expected {{reward: {{option: value}}}}, got {value!r}")
    out: dict[str, dict[str, Any]] = {}
    for reward, options in value.items():
        where = f"{name}.{reward}"
        _choice(where, reward, REWARD_NAMES)
        if not isinstance(options, Mapping):
            raise ConfigError(where, f"expected a mapping of options, got {options!r}")
        checked: dict[str, Any] = {}
        for key, option in options.items():
            _text(f"{where}", key)
            if isinstance(option, str):
                checked[key] = _text(f"{where}.{key}", option, max_chars=2048)
            elif isinstance(option, bool | int | float) or option is None:
                checked[key] = option
            else:
                raise ConfigError(f"{where}.{key}", f"expected a string or number, got {option!r}")
        check_options(where, checked)
        out[str(reward)] = checked
    return out


def _model(name: str, value: Any) -> str:
    """A built-in model name, a local folder or a hub id ORG/NAME[@REV] (checked where the
    model loads: the folder must exist, the id must be in the local Hugging Face cache)."""
    text = _text(name, value, max_chars=1024)
    looks_like_path = "/" in text or text.startswith(".")
    if text not in BUILTIN_MODELS and not looks_like_path:
        raise ConfigError(
            name,
            f"unknown model {text!r}: use one of {', '.join(BUILTIN_MODELS)}, a path to a local "
            "diffusers folder or a hub id ORG/NAME in the local Hugging Face cache",
        )
    return text


_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _device(name: str, value: Any) -> str:
    text = _text(name, value)
    if not _DEVICE_PATTERN.match(text):
        raise ConfigError(name, f"must be auto, cpu, cuda or cuda:N; got {text!r}")
    return text


# ---------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class SamplingConfig:
    steps: int = field(default=10, metadata=_help("T: denoising steps (NFE) per image."))
    cfg_scale: float | None = field(
        default=None,
        metadata=_help(
            "Classifier-free guidance scale; 1 turns guidance off; null = the model's own: 1 on "
            f"guidance-distilled FLUX models (true CFG off), {DEFAULT_CFG_SCALE} otherwise."
        ),
    )
    guidance: float | None = field(
        default=None,
        metadata=_help(
            "Distilled guidance fed to a FLUX model's guidance embedding (FluxPipeline's "
            "guidance_scale); null = 3.5 as FLUX.1-dev. FLUX models with guidance_embeds only."
        ),
    )
    height: int | None = field(
        default=None,
        metadata=_help(
            "Image height in pixels; null = the model's own (folders: the denoiser's sample_size "
            "x the VAE factor; FLUX: 1024). A multiple of the VAE factor x the patch size; one "
            "side alone makes a square."
        ),
    )
    width: int | None = field(
        default=None, metadata=_help("Image width in pixels; null = the model's own (see height).")
    )
    eta: float | None = field(
        default=None,
        metadata=_help(
            "SDE noise level; null = the SDE's own: 0.7 (Flow-GRPO SDE), 0.3 (DanceGRPO SDE), "
            "1.0 (DDIM, as DDPO)."
        ),
    )
    sde: FlowSDEName | None = field(
        default=None,
        metadata=_help(
            "Flow models' SDE: flowgrpo or dancegrpo; null = the algorithm's own (DanceGRPO's "
            "for dancegrpo, Flow-GRPO's otherwise). DDIM models use DDIM's."
        ),
    )
    grid: GridName = field(
        default="model",
        metadata=_help(
            "Step grid: model (the model's diffusers scheduler) or dancegrpo "
            "(linspace(1, 0, T + 1), shifted; flow models only)."
        ),
    )
    max_batch: int = field(
        default=0,
        metadata=_help("Most states per model call in rollouts, CFG halves included; 0 = no cap."),
    )

    def __post_init__(self) -> None:
        _int("sampling.steps", self.steps, 1, MAX_STEPS)
        if self.cfg_scale is not None:
            object.__setattr__(self, "cfg_scale", _float("sampling.cfg_scale", self.cfg_scale, 1.0))
        if self.guidance is not None:
            object.__setattr__(
                self, "guidance", _float("sampling.guidance", self.guidance, 0.0, 100.0)
            )
        for side in ("height", "width"):
            if getattr(self, side) is not None:
                _int(f"sampling.{side}", getattr(self, side), 1, MAX_IMAGE_SIDE)
        if self.eta is not None:
            object.__setattr__(
                self, "eta", _float("sampling.eta", self.eta, 0.0, 10.0, lo_open=True)
            )
        if self.sde is not None:
            _choice("sampling.sde", self.sde, FLOW_SDES)
        _choice("sampling.grid", self.grid, GRIDS)
        _int("sampling.max_batch", self.max_batch, 0)
        if self.max_batch == 1 and self.cfg_scale is not None and self.cfg_scale != 1.0:
            raise ConfigError(
                "sampling.max_batch", "must be >= 2 with CFG (cond and uncond share a call)"
            )

    @property
    def resolved_cfg_scale(self) -> float:
        """cfg_scale once the model has filled in its default (Algorithm.resolve)."""
        if self.cfg_scale is None:
            raise RuntimeError("sampling.cfg_scale is null: resolve the config for its model first")
        return self.cfg_scale


@dataclass(frozen=True)
class TreeConfig:
    k: int = field(default=3, metadata=_help("Branching factor: children per SDE node."))
    depth: int = field(default=3, metadata=_help("d: width of the SDE window in steps."))
    window: WindowSchedule = field(
        default="random",
        metadata=_help(
            "Window placement: random (paper Eq. 7), shift (official code) or fixed; the window "
            "never covers the last step."
        ),
    )
    window_ratio: float = field(
        default=0.5, metadata=_help("r of the truncated geometric P[s] ~ (1 - r) r^s.")
    )
    window_start: int = field(
        default=0, metadata=_help("s for the fixed schedule; first s for shift.")
    )
    shift_every: int = field(
        default=50, metadata=_help("Shift schedule: epochs per move (50 in the official code).")
    )
    shift_by: int = field(default=1, metadata=_help("Shift schedule: steps per move."))
    backup: Backup = field(
        default="mean",
        metadata=_help(
            "How leaf advantages reach internal edges: mean, logprob_softmax, depth_norm."
        ),
    )

    def __post_init__(self) -> None:
        _int("tree.k", self.k, 2, 16)
        _int("tree.depth", self.depth, 1, 1000)
        if self.k**self.depth > MAX_LEAVES_PER_TREE:
            raise ConfigError(
                "tree.depth",
                f"k^depth = {self.k}^{self.depth} leaves per tree exceeds {MAX_LEAVES_PER_TREE}",
            )
        _choice("tree.window", self.window, WINDOW_SCHEDULES)
        object.__setattr__(
            self, "window_ratio", _float("tree.window_ratio", self.window_ratio, 0.0, 1.0, True)
        )
        if self.window_ratio >= 1.0:
            raise ConfigError("tree.window_ratio", "must be < 1")
        _int("tree.window_start", self.window_start, 0)
        _int("tree.shift_every", self.shift_every, 1)
        _int("tree.shift_by", self.shift_by, 0)
        _choice("tree.backup", self.backup, BACKUPS)


@dataclass(frozen=True)
class FlatConfig:
    group_size: int = field(
        default=27, metadata=_help("G: independent trajectories per prompt (flat baselines).")
    )
    timestep_fraction: float | None = field(
        default=None,
        metadata=_help(
            "Fraction of steps trained: DanceGRPO draws int(f (T - 1)) per trajectory, "
            "Flow-GRPO trains the first int(f T); null = the algorithm's (0.6, 0.99)."
        ),
    )
    same_noise: bool | None = field(
        default=None,
        metadata=_help(
            "One initial noise per prompt group; null = the algorithm's (DanceGRPO and MixGRPO "
            "yes, Flow-GRPO no)."
        ),
    )
    global_std: bool | None = field(
        default=None,
        metadata=_help(
            "Advantages divide by the epoch's reward std instead of the group's; null = the "
            "algorithm's (Flow-GRPO yes, others no)."
        ),
    )
    window: int = field(
        default=4, metadata=_help("MixGRPO: width of the sliding SDE window in steps.")
    )
    slide_every: int = field(
        default=25,
        metadata=_help(
            "MixGRPO: iterations before the window moves one step (back to 0 at the end)."
        ),
    )

    def __post_init__(self) -> None:
        _int("flat.group_size", self.group_size, 2, MAX_LEAVES_PER_TREE)
        if self.timestep_fraction is not None:
            object.__setattr__(
                self,
                "timestep_fraction",
                _float("flat.timestep_fraction", self.timestep_fraction, 0.0, 1.0, lo_open=True),
            )
        _int("flat.window", self.window, 1)
        _int("flat.slide_every", self.slide_every, 1)
        for name in ("same_noise", "global_std"):
            if getattr(self, name) is not None:
                _bool(f"flat.{name}", getattr(self, name))


@dataclass(frozen=True)
class TrainConfig:
    lr: float = field(default=1e-5, metadata=_help("AdamW learning rate."))
    weight_decay: float = field(default=1e-4, metadata=_help("AdamW weight decay."))
    clip_range: float = field(default=1e-4, metadata=_help("PPO ratio clip epsilon."))
    adv_clip: float = field(default=5.0, metadata=_help("Advantages are clamped to +-adv_clip."))
    kl_beta: float | None = field(
        default=None,
        metadata=_help(
            "Weight of the KL to the reference policy; 0 = none; null = the algorithm's "
            "(Flow-GRPO 0.01 as its PickScore recipe, the others 0)."
        ),
    )
    kl_form: KLForm = field(
        default="flowgrpo",
        metadata=_help(
            "KL denominator: flowgrpo (2 sigma_t^2, without the step length, as flow_grpo) or "
            "exact (2 std^2, the Gaussian KL)."
        ),
    )
    loss_agg: LossAggregation = field(
        default="sum", metadata=_help("Over the k children of a node: sum (official) or mean.")
    )
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient-norm clip."))
    minibatches: int = field(
        default=1, metadata=_help("Optimizer steps per epoch; the edges are split evenly.")
    )
    micro_batch: int = field(
        default=0, metadata=_help("Most parent states per forward in the update; 0 = all.")
    )
    lora_rank: int = field(default=0, metadata=_help("LoRA rank; 0 = full fine-tune."))
    grad_checkpointing: bool = field(
        default=False, metadata=_help("Gradient checkpointing in the denoiser (GPU models).")
    )
    weights_dtype: WeightsDtype = field(
        default="float32",
        metadata=_help(
            "Storage of the trained weights: float32, or bfloat16 with float32 master weights "
            "and AdamW moments in the optimizer (needs dtype bfloat16)."
        ),
    )
    fused_adamw: bool | None = field(
        default=None, metadata=_help("torch's fused AdamW kernel; null = on CUDA devices.")
    )
    compile: bool = field(
        default=False,
        metadata=_help("torch.compile the denoiser (dynamic shapes); pays off on long GPU runs."),
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", _float("train.lr", self.lr, 0.0, 1.0, lo_open=True))
        object.__setattr__(
            self, "weight_decay", _float("train.weight_decay", self.weight_decay, 0.0, 10.0)
        )
        object.__setattr__(
            self, "clip_range", _float("train.clip_range", self.clip_range, 0.0, 10.0, True)
        )
        object.__setattr__(
            self, "adv_clip", _float("train.adv_clip", self.adv_clip, 0.0, 1e6, lo_open=True)
        )
        if self.kl_beta is not None:
            object.__setattr__(self, "kl_beta", _float("train.kl_beta", self.kl_beta, 0.0, 1e6))
        _choice("train.kl_form", self.kl_form, KL_FORMS)
        _choice("train.loss_agg", self.loss_agg, LOSS_AGGREGATIONS)
        object.__setattr__(
            self,
            "max_grad_norm",
            _float("train.max_grad_norm", self.max_grad_norm, 0.0, 1e6, lo_open=True),
        )
        _int("train.minibatches", self.minibatches, 1, 1024)
        _int("train.micro_batch", self.micro_batch, 0)
        _int("train.lora_rank", self.lora_rank, 0, 1024)
        _bool("train.grad_checkpointing", self.grad_checkpointing)
        _choice("train.weights_dtype", self.weights_dtype, WEIGHTS_DTYPES)
        if self.fused_adamw is not None:
            _bool("train.fused_adamw", self.fused_adamw)
        _bool("train.compile", self.compile)


TRACKERS = ("tensorboard", "wandb", "mlflow")
# The module each tracker imports, and the extra that installs it.
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


@dataclass(frozen=True)
class TrackingConfig:
    """Where the trackers of `trackers` write; all work offline (treegrpo/trackers/)."""

    project: str = field(
        default="treegrpo", metadata=_help("W&B project and MLflow experiment name.")
    )
    mlflow_uri: str | None = field(
        default=None,
        metadata=_help(
            "MLflow tracking URI; null = a local file store (mlruns/) in the run folder."
        ),
    )
    run_name: str | None = field(
        default=None, metadata=_help("Tracker run name; null = job-<id> or the output folder.")
    )

    def __post_init__(self) -> None:
        _text("tracking.project", self.project)
        if self.mlflow_uri is not None:
            _text("tracking.mlflow_uri", self.mlflow_uri, 2000)
        if self.run_name is not None:
            _text("tracking.run_name", self.run_name)


def _trackers(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise ConfigError(
            name, f"expected a list of trackers ({', '.join(TRACKERS)}), got {value!r}"
        )
    return tuple(dict.fromkeys(_choice(f"{name}[{i}]", v, TRACKERS) for i, v in enumerate(value)))


def missing_tracker_packages(trackers: Iterable[str]) -> list[ConfigError]:
    """A ConfigError for each tracker whose package is not installed here (found without
    importing it, so this stays torch-free and fast: the API checks at submit)."""
    import importlib.util

    out = []
    for tracker in trackers:
        module = TRACKER_PACKAGES[tracker]
        if importlib.util.find_spec(module) is None:
            out.append(
                ConfigError(
                    "trackers",
                    f"tracker {tracker!r} needs the {module} package, which is not installed: "
                    f"pip install 'treegrpo-studio[{tracker}]'",
                )
            )
    return out


@dataclass(frozen=True)
class RunConfig:
    algorithm: Algorithm = field(
        default="treegrpo", metadata=_help("treegrpo, dancegrpo, flowgrpo or mixgrpo.")
    )
    model: str = field(
        default="digits",
        metadata=_help(
            "digits, digits-ddim, tiny-random, tiny-random-ddim, a local diffusers folder or a "
            "hub id ORG/NAME[@REV] in the local Hugging Face cache."
        ),
    )
    reward: str | tuple[tuple[str, float], ...] = field(
        default="digit_judge", metadata=_help("A reward name, or {name: weight, ...}.")
    )
    reward_options: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata=_help(
            "Per-reward options, e.g. {clipscore: {path: /models/clip}}; {server: URL} scores "
            "that reward on its reward-serve. No secret values: name them with <field>_env or "
            "<field>_secret (docs/API.md)."
        ),
    )
    reward_workers: int = field(
        default=0,
        metadata=_help(
            "Threads that score chunks of trees while later chunks grow (TreeGRPO); 0 = score "
            "after the rollout, or 2 when a reward is remote. Results equal serial scoring."
        ),
    )
    prompts: str | tuple[str, ...] = field(
        default="digits", metadata=_help("A prompt-set name or a list of prompts.")
    )
    prompts_per_epoch: int = field(default=4, metadata=_help("Prompts (trees) per epoch."))
    eval_prompts: str | tuple[str, ...] | None = field(
        default=None, metadata=_help("Held-out prompts for galleries; null = the first prompts.")
    )
    epochs: int = field(default=10, metadata=_help("Training epochs (iterations)."))
    seed: int = field(default=0, metadata=_help("Seeds every random choice of the run."))
    device: str = field(default="auto", metadata=_help("auto, cpu, cuda or cuda:N."))
    gpus: int = field(
        default=1,
        metadata=_help(
            "Processes (GPUs) the trainer runs on; > 1 runs torch.distributed ranks (started by "
            "`accelerate launch`; gloo on the CPU), each with an equal share of the prompts."
        ),
    )
    dtype: DType = field(
        default="float32", metadata=_help("Model dtype; step math always runs in float32.")
    )
    checkpoint_every: int = field(
        default=1, metadata=_help("Epochs between checkpoints; the final epoch always saves one.")
    )
    log_tree_every: int = field(
        default=0,
        metadata=_help(
            "Epochs between logged trees (with images); the final epoch always logs its trees."
        ),
    )
    sample_every: int = field(
        default=0,
        metadata=_help(
            "Epochs between sample galleries (epoch 0 too); the final epoch always has one."
        ),
    )
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    tree: TreeConfig = field(default_factory=TreeConfig)
    flat: FlatConfig = field(default_factory=FlatConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trackers: tuple[str, ...] = field(
        default=(),
        metadata=_help(
            "Experiment trackers, any of tensorboard, wandb, mlflow (offline-first; optional "
            "extras: pip install 'treegrpo-studio[trackers]')."
        ),
    )
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    SECTIONS: ClassVar[dict[str, type]] = {
        "sampling": SamplingConfig,
        "tree": TreeConfig,
        "flat": FlatConfig,
        "train": TrainConfig,
        "tracking": TrackingConfig,
    }

    def __post_init__(self) -> None:
        _choice("algorithm", self.algorithm, ALGORITHMS)
        _model("model", self.model)
        object.__setattr__(self, "reward", _reward("reward", self.reward))
        options = _reward_options("reward_options", self.reward_options)
        unused = sorted(set(options) - set(self.reward_weights))
        if unused:
            raise ConfigError(
                f"reward_options.{unused[0]}", "options given for a reward the run does not use"
            )
        object.__setattr__(self, "reward_options", options)
        object.__setattr__(self, "prompts", _prompts("prompts", self.prompts))
        _int("prompts_per_epoch", self.prompts_per_epoch, 1, MAX_PROMPTS)
        if self.eval_prompts is not None:
            object.__setattr__(self, "eval_prompts", _prompts("eval_prompts", self.eval_prompts))
        _int("reward_workers", self.reward_workers, 0, 64)
        _int("epochs", self.epochs, 1, 10_000_000)
        _int("seed", self.seed, 0, 2**31 - 1)
        _device("device", self.device)
        _int("gpus", self.gpus, 1, MAX_GPUS)
        if self.prompts_per_epoch % self.gpus:
            raise ConfigError(
                "gpus",
                f"prompts_per_epoch = {self.prompts_per_epoch} must be divisible by gpus = "
                f"{self.gpus}: each process rolls out an equal share of the epoch's prompts",
            )
        _choice("dtype", self.dtype, DTYPES)
        if self.train.weights_dtype != "float32" and self.dtype != self.train.weights_dtype:
            raise ConfigError(
                "train.weights_dtype",
                f"{self.train.weights_dtype} weights run under {self.train.weights_dtype} "
                f"autocast: set dtype: {self.train.weights_dtype} too (got {self.dtype})",
            )
        _int("checkpoint_every", self.checkpoint_every, 0)
        _int("log_tree_every", self.log_tree_every, 0)
        _int("sample_every", self.sample_every, 0)
        object.__setattr__(self, "trackers", _trackers("trackers", self.trackers))
        for name, cls in self.SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(name, f"expected a {name} section")
        self._check_windows()

    def _check_windows(self) -> None:
        steps = self.sampling.steps
        if self.algorithm == "treegrpo":
            # The window never covers the last step (paper Eq. 7: s = 0 .. T - d - 1): branching
            # there would only add noise that the clean leaf image does not show.
            width, width_field, last_start = (
                self.tree.depth,
                "tree.depth",
                steps - self.tree.depth - 1,
            )
        elif self.algorithm == "mixgrpo":
            # MixGRPO's window runs over steps 0 .. T - 3 (the last two stay ODE).
            width, width_field, last_start = self.flat.window, "flat.window", steps - 3
        else:
            return
        if last_start < 0:
            raise ConfigError(
                width_field,
                f"a window of {width} steps does not fit in sampling.steps = {steps}"
                + (
                    " before the last step"
                    if self.algorithm == "treegrpo"
                    else " (MixGRPO needs at least 3 steps)"
                ),
            )
        if self.algorithm != "treegrpo":
            return
        if self.tree.window in ("fixed", "shift") and self.tree.window_start > last_start:
            raise ConfigError(
                "tree.window_start",
                f"window [{self.tree.window_start}, {self.tree.window_start + width}) is past the "
                f"last valid start {last_start} ({steps} steps; the window ends before the last "
                "step)",
            )

    # -- conversion --------------------------------------------------------------------------

    @property
    def reward_weights(self) -> dict[str, float]:
        """The reward as {name: weight}; a single name has weight 1."""
        if isinstance(self.reward, str):
            return {self.reward: 1.0}
        return dict(self.reward)

    @property
    def window_width(self) -> int:
        """SDE window width of the algorithm: tree depth, MixGRPO's window, or all steps."""
        if self.algorithm == "treegrpo":
            return self.tree.depth
        if self.algorithm == "mixgrpo":
            return self.flat.window
        return self.sampling.steps

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able nested dict; `RunConfig.from_dict(cfg.to_dict()) == cfg`."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
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
            section = cls.SECTIONS.get(key)
            if section is None:
                kwargs[key] = value
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(key, f"expected a mapping of {key}.* settings, got {value!r}")
            names = {f.name for f in dataclasses.fields(section)}
            for sub in value:
                if sub not in names:
                    raise ConfigError(f"{key}.{sub}", _unknown_message(sub, names))
            kwargs[key] = section(**value)
        return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# When a run logs. The final epoch always logs a gallery, its trees and a checkpoint, whatever
# the *_every settings, so a short run always shows its trained model. Stored gallery, tree and
# checkpoint epochs count finished epochs (1..epochs; gallery 0 = the baseline before training):
# the trees of rollout e (0-based, is_tree_epoch) are stored as epoch e + 1.


def is_gallery_epoch(epoch: int, *, epochs: int, every: int) -> bool:
    return epoch == epochs or (every > 0 and epoch % every == 0)


def is_tree_epoch(epoch: int, *, epochs: int, every: int) -> bool:
    return epoch == epochs - 1 or (every > 0 and epoch % every == 0)


def is_checkpoint_epoch(epoch: int, *, epochs: int, every: int) -> bool:
    return epoch == epochs or (every > 0 and epoch % every == 0)


def _next_multiple(start: int, every: int, last: int) -> int:
    """The smallest multiple of `every` >= start, or the final epoch `last` if sooner."""
    if every <= 0:
        return last
    return min(-(-start // every) * every, last)


def logging_schedule(
    *,
    epochs: int,
    epochs_done: int,
    sample_every: int,
    log_tree_every: int,
    checkpoint_every: int,
) -> dict[str, int | None]:
    """The next gallery, tree and checkpoint epochs still to come after `epochs_done` finished
    epochs (None when none is left), in the numbering of the stored rows."""
    done = max(0, epochs_done)
    gallery = _next_multiple(done + 1, sample_every, epochs) if done < epochs else None
    tree = _next_multiple(done, log_tree_every, epochs - 1) + 1 if done < epochs else None
    checkpoint = _next_multiple(done + 1, checkpoint_every, epochs) if done < epochs else None
    return {
        "next_gallery_epoch": gallery,
        "next_tree_epoch": tree,
        "next_checkpoint_epoch": checkpoint,
    }


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


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dict merge; values of `update` win, mappings merge key by key."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$")


@functools.cache
def _yaml_loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))
    return Loader


def load_yaml(text: str) -> Any:
    """Safe YAML that also reads `1e-5` as a float (PyYAML's YAML 1.1 rules need `1.0e-5`)."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # a SafeLoader subclass: no arbitrary objects


def parse_assignment(text: str) -> tuple[str, Any]:
    """`"tree.k=4"` -> ("tree.k", 4). Values are parsed as YAML scalars/lists/maps."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(text, "expected key=value")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(key.strip(), f"cannot parse value {raw!r}: {exc}") from exc
    return key.strip(), value


def resolve_config(
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    assignments: Iterable[str] = (),
) -> RunConfig:
    """Preset, then nested/dotted overrides, then `key=value` assignments; validated."""
    from treegrpo.presets import preset_dict

    data: dict[str, Any] = preset_dict(preset) if preset else {}
    if overrides:
        data = deep_merge(data, expand_dotted(overrides))
    for text in assignments:
        key, value = parse_assignment(text)
        data = deep_merge(data, expand_dotted({key: value}))
    return RunConfig.from_dict(data)


def config_errors(
    preset: str | None = None, overrides: Mapping[str, Any] | None = None
) -> list[ConfigError]:
    """Every problem of a preset plus overrides, not only the first: after each error the
    faulty setting is taken out (back to its default) and the rest checked again. Empty when
    the config is valid. Problems that depend on one another may show only the first."""
    import copy

    from treegrpo.presets import preset_dict

    try:
        data: dict[str, Any] = preset_dict(preset) if preset else {}
        if overrides:
            data = deep_merge(data, expand_dotted(overrides))
    except ConfigError as exc:
        return [exc]
    data = copy.deepcopy(data)
    errors: list[ConfigError] = []
    for _ in range(len(field_help()) + 8):
        try:
            RunConfig.from_dict(data)
            return errors
        except ConfigError as exc:
            errors.append(exc)
            if not _take_out(data, exc.field):
                return errors
        except (TypeError, ValueError, RecursionError):
            return errors
    return errors


def _take_out(data: dict[str, Any], dotted: str) -> bool:
    """Remove the setting `dotted` from nested `data`; False when it is not there."""
    parts = dotted.split(".")
    node: Any = data
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        return False
    del node[parts[-1]]
    return True


def field_help() -> dict[str, str]:
    """Dotted name -> help text, for CLI help and docs."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(RunConfig):
        section = RunConfig.SECTIONS.get(f.name)
        if section is None:
            out[f.name] = f.metadata.get("help", "")
            continue
        for sub in dataclasses.fields(section):
            out[f"{f.name}.{sub.name}"] = sub.metadata.get("help", "")
    return out


assert set(get_args(Algorithm)) == set(ALGORITHMS)
assert set(get_args(Backup)) == set(BACKUPS)


# What each setting accepts, for the docs; the checks themselves live in __post_init__.
ALLOWED: dict[str, str] = {
    "algorithm": " \\| ".join(ALGORITHMS),
    "model": " \\| ".join(BUILTIN_MODELS) + " \\| a folder path \\| a cached hub id ORG/NAME[@REV]",
    "reward": "a registered reward, or {name: weight > 0}",
    "reward_options": "{reward: {option: string or number}} for rewards the run uses",
    "reward_workers": "0 .. 64",
    "prompts": f"a prompt set, or 1..{MAX_PROMPTS} prompts of <= {MAX_PROMPT_CHARS} chars",
    "prompts_per_epoch": f"1..{MAX_PROMPTS}",
    "eval_prompts": "null, a prompt set, or a list of prompts",
    "epochs": ">= 1",
    "seed": "0..2^31-1",
    "device": "auto \\| cpu \\| cuda \\| cuda:N",
    "gpus": f"1..{MAX_GPUS}, divides prompts_per_epoch",
    "dtype": " \\| ".join(DTYPES),
    "checkpoint_every": ">= 0",
    "log_tree_every": ">= 0",
    "sample_every": ">= 0",
    "sampling.steps": f"1..{MAX_STEPS}",
    "sampling.cfg_scale": "null \\| >= 1",
    "sampling.guidance": "null \\| [0, 100] (FLUX with guidance_embeds)",
    "sampling.height": f"null \\| 1..{MAX_IMAGE_SIDE}, a multiple of VAE factor x patch",
    "sampling.width": f"null \\| 1..{MAX_IMAGE_SIDE}, a multiple of VAE factor x patch",
    "sampling.eta": "null \\| (0, 10]",
    "sampling.sde": "null \\| " + " \\| ".join(FLOW_SDES),
    "sampling.grid": " \\| ".join(GRIDS),
    "sampling.max_batch": ">= 0; >= 2 with CFG",
    "tree.k": "2..16",
    "tree.depth": f">= 1, < sampling.steps, k^depth <= {MAX_LEAVES_PER_TREE}",
    "tree.window": " \\| ".join(WINDOW_SCHEDULES),
    "tree.window_ratio": "(0, 1)",
    "tree.window_start": "0..steps - depth - 1",
    "tree.shift_every": ">= 1",
    "tree.shift_by": ">= 0",
    "tree.backup": " \\| ".join(BACKUPS),
    "flat.group_size": f"2..{MAX_LEAVES_PER_TREE}",
    "flat.timestep_fraction": "null \\| (0, 1]",
    "flat.same_noise": "null \\| true \\| false",
    "flat.global_std": "null \\| true \\| false",
    "flat.window": "1..sampling.steps",
    "flat.slide_every": ">= 1",
    "train.lr": "(0, 1]",
    "train.weight_decay": "[0, 10]",
    "train.clip_range": "(0, 10]",
    "train.adv_clip": "> 0",
    "train.kl_beta": "null \\| >= 0",
    "train.kl_form": " \\| ".join(KL_FORMS),
    "train.loss_agg": " \\| ".join(LOSS_AGGREGATIONS),
    "train.max_grad_norm": "> 0",
    "train.minibatches": "1..1024",
    "train.micro_batch": ">= 0",
    "train.lora_rank": "0..1024",
    "train.grad_checkpointing": "true \\| false",
    "train.weights_dtype": " \\| ".join(WEIGHTS_DTYPES),
    "train.fused_adamw": "null \\| true \\| false",
    "train.compile": "true \\| false",
    "trackers": "a list of " + " \\| ".join(TRACKERS),
    "tracking.project": "a name",
    "tracking.mlflow_uri": "null \\| an MLflow tracking URI",
    "tracking.run_name": "null \\| a name",
}


def settings_table() -> str:
    """Markdown table of every setting: dotted name, default, meaning (docs/CONFIG.md)."""
    import json

    defaults = RunConfig().to_dict()
    rows = ["| setting | default | allowed | meaning |", "|---|---|---|---|"]
    for name, text in field_help().items():
        head, _, rest = name.partition(".")
        value = defaults[head][rest] if rest else defaults[head]
        rows.append(f"| `{name}` | `{json.dumps(value)}` | {ALLOWED[name]} | {text} |")
    return "\n".join(rows) + "\n"


def catalog() -> dict[str, Any]:
    """What a user can choose, for the API's /models, /rewards and /presets (torch-free)."""
    from treegrpo.presets import PRESETS
    from treegrpo.prompts import PROMPT_SETS
    from treegrpo.rewards.names import REWARD_NAMES

    return {
        "models": list(BUILTIN_MODELS),
        "rewards": list(REWARD_NAMES),
        "prompt_sets": {name: list(prompts) for name, prompts in PROMPT_SETS.items()},
        "presets": {name: resolve_config(preset=name).to_dict() for name in PRESETS},
    }
