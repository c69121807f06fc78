"""The nested groups of settings: sampling.*, tree.*, flat.*, train.*, eval.*, tracking.*.

Each setting is one `setting(default, help, check)` line (fields.py); the rules between the
settings of one section sit in its `check_together`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

from treegrpo.config.fields import (
    Bool,
    Choice,
    Float,
    Int,
    Nullable,
    Section,
    Text,
    setting,
)
from treegrpo.config.values import Reward
from treegrpo.errors import ConfigError

MAX_LEAVES_PER_TREE = 4096
MAX_STEPS = 500  # RL fine-tuning samples with few steps (the paper: 10)
MAX_IMAGE_SIDE = 8192  # pixels; the model checks its own multiple and maximum
DEFAULT_CFG_SCALE = 4.5  # CFG of models that are not guidance-distilled (SD3 and Flow-GRPO's)
# Flow-GRPO evaluates with 40 steps against 10 in training (config/grpo.py eval_num_steps).
SD_EVAL_STEPS = 40
MAX_EVAL_IMAGES_PER_PROMPT = 64

FlowSDEName = Literal["flowgrpo", "dancegrpo"]
GridName = Literal["model", "dancegrpo"]
WindowSchedule = Literal["random", "shift", "fixed"]
Backup = Literal["mean", "logprob_softmax", "depth_norm"]
KLForm = Literal["flowgrpo", "exact"]
LossAggregation = Literal["sum", "mean"]
WeightsDtype = Literal["float32", "bfloat16"]
Sharding = Literal["none", "fsdp"]
TextEncoders = Literal["device", "offload", "cache"]

FLOW_SDES: tuple[str, ...] = get_args(FlowSDEName)
GRIDS: tuple[str, ...] = get_args(GridName)
WINDOW_SCHEDULES: tuple[str, ...] = get_args(WindowSchedule)
BACKUPS: tuple[str, ...] = get_args(Backup)
KL_FORMS: tuple[str, ...] = get_args(KLForm)
LOSS_AGGREGATIONS: tuple[str, ...] = get_args(LossAggregation)
WEIGHTS_DTYPES: tuple[str, ...] = get_args(WeightsDtype)
SHARDINGS: tuple[str, ...] = get_args(Sharding)
TEXT_ENCODER_PLACEMENTS: tuple[str, ...] = get_args(TextEncoders)


@dataclass(frozen=True)
class SamplingConfig(Section):
    PREFIX: ClassVar[str] = "sampling"

    steps: int = setting(10, "T: denoising steps (NFE) per image.", Int(1, MAX_STEPS))
    cfg_scale: float | None = setting(
        None,
        "Classifier-free guidance scale; 1 turns guidance off; null = the model's own: 1 on "
        f"guidance-distilled FLUX models (true CFG off), {DEFAULT_CFG_SCALE} otherwise.",
        Nullable(Float(1.0)),
    )
    guidance: float | None = setting(
        None,
        "Distilled guidance fed to a FLUX model's guidance embedding (FluxPipeline's "
        "guidance_scale); null = 3.5 as FLUX.1-dev. FLUX models with guidance_embeds only.",
        Nullable(Float(0.0, 100.0)),
        note="FLUX with guidance_embeds",
    )
    height: int | None = setting(
        None,
        "Image height in pixels; null = the model's own (folders: the denoiser's sample_size "
        "x the VAE factor; FLUX: 1024). A multiple of the VAE factor x the patch size; one "
        "side alone makes a square.",
        Nullable(Int(1, MAX_IMAGE_SIDE)),
        note="a multiple of VAE factor x patch",
    )
    width: int | None = setting(
        None,
        "Image width in pixels; null = the model's own (see height).",
        Nullable(Int(1, MAX_IMAGE_SIDE)),
        note="a multiple of VAE factor x patch",
    )
    eta: float | None = setting(
        None,
        "SDE noise level; null = the SDE's own: 0.7 (Flow-GRPO SDE), 0.3 (DanceGRPO SDE), "
        "1.0 (DDIM, as DDPO).",
        Nullable(Float(0.0, 10.0, lo_open=True)),
    )
    sde: FlowSDEName | None = setting(
        None,
        "Flow models' SDE: flowgrpo or dancegrpo; null = the algorithm's own (DanceGRPO's "
        "for dancegrpo, Flow-GRPO's otherwise). DDIM models use DDIM's.",
        Nullable(Choice(FLOW_SDES)),
    )
    grid: GridName = setting(
        "model",
        "Step grid: model (the model's diffusers scheduler) or dancegrpo "
        "(linspace(1, 0, T + 1), shifted; flow models only).",
        Choice(GRIDS),
    )
    max_batch: int = setting(
        0,
        "Most states per model call in rollouts, CFG halves included; 0 = no cap.",
        Int(0),
        note=">= 2 with CFG",
    )

    def check_together(self) -> None:
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
class TreeConfig(Section):
    PREFIX: ClassVar[str] = "tree"

    k: int = setting(3, "Branching factor: children per SDE node.", Int(2, 16))
    depth: int = setting(
        3,
        "d: width of the SDE window in steps.",
        Int(1, 1000),
        note=f"< sampling.steps; k^depth <= {MAX_LEAVES_PER_TREE}",
    )
    window: WindowSchedule = setting(
        "random",
        "Window placement: random (paper Eq. 7), shift (official code) or fixed; the window "
        "never covers the last step.",
        Choice(WINDOW_SCHEDULES),
    )
    window_ratio: float = setting(
        0.5,
        "r of the truncated geometric P[s] ~ (1 - r) r^s.",
        Float(0.0, 1.0, lo_open=True, hi_open=True),
    )
    window_start: int = setting(
        0,
        "s for the fixed schedule; first s for shift.",
        Int(0),
        note="fixed and shift: <= steps - depth - 1",
    )
    shift_every: int = setting(
        50, "Shift schedule: epochs per move (50 in the official code).", Int(1)
    )
    shift_by: int = setting(1, "Shift schedule: steps per move.", Int(0))
    backup: Backup = setting(
        "mean",
        "How leaf advantages reach internal edges: mean, logprob_softmax, depth_norm.",
        Choice(BACKUPS),
    )

    def check_together(self) -> None:
        if self.k**self.depth > MAX_LEAVES_PER_TREE:
            raise ConfigError(
                "tree.depth",
                f"k^depth = {self.k}^{self.depth} leaves per tree exceeds {MAX_LEAVES_PER_TREE}",
            )


@dataclass(frozen=True)
class FlatConfig(Section):
    PREFIX: ClassVar[str] = "flat"

    group_size: int = setting(
        27,
        "G: independent trajectories per prompt (flat baselines).",
        Int(2, MAX_LEAVES_PER_TREE),
    )
    timestep_fraction: float | None = setting(
        None,
        "Fraction of steps trained: DanceGRPO draws int(f (T - 1)) per trajectory, "
        "Flow-GRPO trains the first int(f T); null = the algorithm's (0.6, 0.99).",
        Nullable(Float(0.0, 1.0, lo_open=True)),
    )
    same_noise: bool | None = setting(
        None,
        "One initial noise per prompt group; null = the algorithm's (DanceGRPO and MixGRPO "
        "yes, Flow-GRPO no).",
        Nullable(Bool()),
    )
    global_std: bool | None = setting(
        None,
        "Advantages divide by the epoch's reward std instead of the group's; null = the "
        "algorithm's (Flow-GRPO yes, others no).",
        Nullable(Bool()),
    )
    window: int = setting(
        4,
        "MixGRPO: width of the sliding SDE window in steps.",
        Int(1),
        note="narrows near the end (the last two steps stay ODE)",
    )
    slide_every: int = setting(
        25, "MixGRPO: iterations before the window moves one step (back to 0 at the end).", Int(1)
    )


@dataclass(frozen=True)
class TrainConfig(Section):
    PREFIX: ClassVar[str] = "train"

    lr: float | None = setting(
        None,
        "AdamW learning rate; null = full_lr for a full fine-tune, lora_lr with lora_rank > 0.",
        Nullable(Float(0.0, 1.0, lo_open=True)),
    )
    full_lr: float = setting(
        1e-5,
        "The learning rate a null lr means in a full fine-tune.",
        Float(0.0, 1.0, lo_open=True),
    )
    lora_lr: float = setting(
        3e-4,
        "The learning rate a null lr means with LoRA (Flow-GRPO's LoRA recipe: 3e-4); adapters "
        "that start at zero need a larger step than the full weights.",
        Float(0.0, 1.0, lo_open=True),
    )
    weight_decay: float = setting(1e-4, "AdamW weight decay.", Float(0.0, 10.0))
    clip_range: float = setting(1e-4, "PPO ratio clip epsilon.", Float(0.0, 10.0, lo_open=True))
    adv_clip: float = setting(
        5.0, "Advantages are clamped to +-adv_clip.", Float(0.0, 1e6, lo_open=True)
    )
    kl_beta: float | None = setting(
        None,
        "Weight of the KL to the reference policy; 0 = none; null = the algorithm's "
        "(Flow-GRPO 0.01 as its PickScore recipe, the others 0).",
        Nullable(Float(0.0, 1e6)),
    )
    kl_form: KLForm = setting(
        "flowgrpo",
        "KL denominator: flowgrpo (2 sigma_t^2, without the step length, as flow_grpo) or "
        "exact (2 std^2, the Gaussian KL).",
        Choice(KL_FORMS),
    )
    loss_agg: LossAggregation = setting(
        "sum", "Over the k children of a node: sum (official) or mean.", Choice(LOSS_AGGREGATIONS)
    )
    max_grad_norm: float = setting(1.0, "Gradient-norm clip.", Float(0.0, 1e6, lo_open=True))
    minibatches: int = setting(
        1, "Optimizer steps per epoch; the edges are split evenly.", Int(1, 1024)
    )
    micro_batch: int = setting(0, "Most parent states per forward in the update; 0 = all.", Int(0))
    lora_rank: int = setting(0, "LoRA rank; 0 = full fine-tune.", Int(0, 1024))
    grad_checkpointing: bool = setting(
        False, "Gradient checkpointing in the denoiser (GPU models).", Bool()
    )
    weights_dtype: WeightsDtype = setting(
        "float32",
        "Storage of the trained weights: float32, or bfloat16 with float32 master weights "
        "and AdamW moments in the optimizer (needs dtype bfloat16).",
        Choice(WEIGHTS_DTYPES),
        note="bfloat16 needs dtype bfloat16",
    )
    sharding: Sharding = setting(
        "none",
        "With gpus > 1: none (a full replica per process) or fsdp (FSDP2: the denoiser's "
        "weights, gradients and AdamW state split over the processes; float32 shards, "
        "compute in dtype; DCP checkpoints).",
        Choice(SHARDINGS),
        note="fsdp needs weights_dtype float32",
    )
    text_encoders: TextEncoders = setting(
        "device",
        "Where the frozen text encoders live between prompt encodings: device, offload "
        "(host memory, on the device only while encoding) or cache (offload, and each "
        "distinct prompt encoded once).",
        Choice(TEXT_ENCODER_PLACEMENTS),
    )
    fused_adamw: bool | None = setting(
        None, "torch's fused AdamW kernel; null = on CUDA devices.", Nullable(Bool())
    )
    compile: bool = setting(
        False,
        "torch.compile the denoiser (dynamic shapes); pays off on long GPU runs.",
        Bool(),
    )
    ema: bool = setting(
        False,
        "Keep an exponential moving average of the trained weights (Flow-GRPO's EMA, in "
        "every checkpoint); galleries and evaluate jobs then sample with the EMA weights.",
        Bool(),
        note="not with sharding fsdp",
    )
    ema_decay: float = setting(
        0.9,
        "EMA decay; the first updates use min((1 + n) / (10 + n), decay) at optimizer step n "
        "(Flow-GRPO: 0.9).",
        Float(0.0, 1.0, hi_open=True),
    )
    ema_every: int = setting(8, "Optimizer steps per EMA update (Flow-GRPO: 8).", Int(1, 1_000_000))

    @property
    def effective_lr(self) -> float:
        """lr, or what a null lr means: lora_lr with LoRA, full_lr in a full fine-tune."""
        if self.lr is not None:
            return self.lr
        return self.lora_lr if self.lora_rank else self.full_lr


@dataclass(frozen=True)
class EvalConfig(Section):
    """How held-out prompts are evaluated: evaluate jobs (treegrpo/evaluate.py)."""

    PREFIX: ClassVar[str] = "eval"

    rewards: str | tuple[tuple[str, float], ...] | None = setting(
        None,
        "The rewards an evaluation reports, apart from the training reward; a name or "
        "{name: weight, ...} as `reward`; null = the training reward.",
        Nullable(Reward()),
    )
    steps: int | None = setting(
        None,
        f"Denoising steps of an evaluation; null = {SD_EVAL_STEPS} for models from folders or "
        "the hub (Flow-GRPO evaluates with 40 against 10 in training), the training steps "
        "for the built-in models.",
        Nullable(Int(1, MAX_STEPS)),
    )
    seed: int = setting(
        0,
        "Seed of the fixed evaluation noise: prompt i's noises depend only on (eval.seed, i), "
        "not on the run's seed, so every model is evaluated from the same noises.",
        Int(0, 2**31 - 1),
    )
    images_per_prompt: int = setting(
        1,
        "Images per held-out prompt in an evaluation (Flow-GRPO: 1).",
        Int(1, MAX_EVAL_IMAGES_PER_PROMPT),
    )


@dataclass(frozen=True)
class TrackingConfig(Section):
    """Where the trackers of `trackers` write; all work offline (treegrpo/trackers/)."""

    PREFIX: ClassVar[str] = "tracking"

    project: str = setting("treegrpo", "W&B project and MLflow experiment name.", Text())
    mlflow_uri: str | None = setting(
        None,
        "MLflow tracking URI; null = a local file store (mlruns/) in the run folder.",
        Nullable(Text("an MLflow tracking URI", 2000)),
    )
    run_name: str | None = setting(
        None, "Tracker run name; null = job-<id> or the output folder.", Nullable(Text())
    )
