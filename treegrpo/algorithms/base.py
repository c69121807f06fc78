"""What every algorithm is to the trainer: one epoch's rollout behind a small frozen context.

An algorithm owns one epoch's rollout: how it samples (trees or flat groups, which steps are
stochastic, which noise is shared), which SDE edges it trains, which latent it decodes and
scores, and how rewards become advantages. It receives an `EpochContext` (the resolved config,
the model, its schedule, the epoch's plan and conditioning, a noise source, a scorer and whether
to record trees) and returns an `EpochRollout` holding everything it produced. It sees nothing
of the trainer: the trainer (`trainer.py`) plans the epoch, calls `roll_out`, runs the same PPO
update (`update.py`) on the edges, logs and checkpoints.

    ctx = EpochContext(config, adapter, schedule, plan, cond, noise, scorer, record_trees=False)
    rollout = get_algorithm(config.algorithm).roll_out(ctx)
    rollout.edges, rollout.metrics, rollout.images, rollout.model_evals, rollout.tree_records

Defaults: a setting the config leaves null (`sampling.eta`, `sampling.sde`,
`flat.timestep_fraction`, `flat.same_noise`, `flat.global_std`, `train.kl_beta`) takes the
algorithm's value from `defaults`, each next to the original's file in the algorithm's module.
"""

from __future__ import annotations

import dataclasses
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from treegrpo.config import DEFAULT_CFG_SCALE, ConfigError, RunConfig
from treegrpo.edges import EdgeBatch
from treegrpo.models.base import Conditioning, ModelAdapter
from treegrpo.schedules import Family, Schedule
from treegrpo.scoring import Scorer
from treegrpo.tree_record import TreeRecord

# The SDE noise level each SDE samples with when `sampling.eta` is null.
SDE_ETA = {"flowgrpo": 0.7, "dancegrpo": 0.3, "ddim": 1.0}
# A last SDE step whose std is at most this leaves no visible noise in the final state (Flow-GRPO
# on the diffusers grid: sigma 0.009, std 0.006); above it, the clean estimate is decoded.
DECODE_NOISE_TOLERANCE = 0.01


@dataclass
class EpochPlan:
    """What the trainer decided for an epoch before any sampling."""

    epoch: int
    prompts: list[str]  # the whole epoch's, on every rank
    groups: Tensor  # (prompts,) id of each prompt, equal prompts share one
    window_start: int
    generator: torch.Generator
    rng: random.Random
    local: range  # this rank's trees (flat groups): indices into `prompts`
    # Each prompt's row metadata in its dataset ({} when none), handed to the rewards with
    # every image of the prompt; empty = {} for every prompt.
    metadata: list[dict[str, Any]] = field(default_factory=list)

    @property
    def local_prompts(self) -> list[str]:
        return self.prompts[self.local.start : self.local.stop]

    @property
    def local_metadata(self) -> list[dict[str, Any]]:
        rows = self.metadata or [{} for _ in self.prompts]
        return rows[self.local.start : self.local.stop]


@dataclass(frozen=True)
class EpochContext:
    """Everything an algorithm's rollout may use; it reaches nothing else."""

    config: RunConfig  # resolved: no null the algorithm decides
    adapter: ModelAdapter
    schedule: Schedule
    plan: EpochPlan
    cond: Conditioning  # this rank's prompts (plan.local_prompts), in order
    noise: Callable[[int], torch.Generator]  # tree (flat group) index -> its noise generator
    scorer: Scorer
    # The tree sink: True on an epoch whose trees are logged; the rollout then returns their
    # records in `EpochRollout.tree_records` and the trainer hands them to the callbacks.
    record_trees: bool = False


@dataclass
class EpochRollout:
    """What one epoch's rollout produced: all that the update, the metrics and the logs need."""

    edges: EdgeBatch  # this rank's trained edges
    metrics: dict[str, float]
    images: int  # images of the whole epoch (all ranks)
    model_evals: int  # model evaluations of the whole epoch (all ranks), before CFG
    # This rank's tree records, numbered within the epoch; None where no trees were recorded
    # (the same on every rank, so every rank takes part in gathering them, or none does).
    tree_records: list[TreeRecord] | None = field(default=None)


class Algorithm(ABC):
    name: ClassVar[str]
    # The SDE of flow models when `sampling.sde` is null.
    sde: ClassVar[str] = "flowgrpo"
    # Settings used where the config says null: dotted name -> value.
    defaults: ClassVar[dict[str, Any]] = {}

    def resolve(
        self, config: RunConfig, family: Family, cfg_default: float = DEFAULT_CFG_SCALE
    ) -> RunConfig:
        """`config` with every null that this algorithm decides filled in, for a model of
        `family` whose own CFG scale is `cfg_default` (adapter.default_cfg_scale). Raises
        ConfigError for a choice the family cannot run."""
        sampling, flat, train = config.sampling, config.flat, config.train
        if family == "epsilon":
            if sampling.sde == "dancegrpo" or sampling.grid != "model":
                field = "sampling.sde" if sampling.sde == "dancegrpo" else "sampling.grid"
                raise ConfigError(
                    field, "applies to flow-matching models only; DDIM models use DDIM steps"
                )
            sde = "flowgrpo"  # unused by DDIM; the field is not null after resolving
            eta = sampling.eta if sampling.eta is not None else SDE_ETA["ddim"]
        else:
            sde = sampling.sde or self.sde
            eta = sampling.eta if sampling.eta is not None else SDE_ETA[sde]
        defaults = {**GENERIC_DEFAULTS, **self.defaults}
        return dataclasses.replace(
            config,
            sampling=dataclasses.replace(
                sampling,
                sde=sde,  # type: ignore[arg-type]
                eta=eta,
                cfg_scale=sampling.cfg_scale if sampling.cfg_scale is not None else cfg_default,
            ),
            flat=dataclasses.replace(
                flat,
                **{
                    name: getattr(flat, name)
                    if getattr(flat, name) is not None
                    else defaults[f"flat.{name}"]
                    for name in ("timestep_fraction", "same_noise", "global_std")
                },
            ),
            train=dataclasses.replace(
                train,
                kl_beta=train.kl_beta if train.kl_beta is not None else defaults["train.kl_beta"],
            ),
        )

    def possible_sde_steps(self, config: RunConfig) -> range:
        """Every step some epoch may sample stochastically (checked for noise up front)."""
        return range(config.sampling.steps)

    def window_start(self, config: RunConfig, epoch: int, rng: random.Random) -> int:
        """The first SDE step of the epoch's window (0 where the algorithm has none)."""
        return 0

    @abstractmethod
    def roll_out(self, ctx: EpochContext) -> EpochRollout:
        """Sample this rank's share of the epoch, score it, and return what it produced."""

    @abstractmethod
    def epoch_counts(self, config: RunConfig) -> tuple[int, int, int]:
        """(images, trained edges, model evaluations before CFG) of one epoch, for run info."""


# Used where neither the config nor the algorithm says otherwise.
GENERIC_DEFAULTS: dict[str, Any] = {
    "flat.timestep_fraction": 1.0,
    "flat.same_noise": True,
    "flat.global_std": False,
    "train.kl_beta": 0.0,
}


def decoded_latents(
    final: Tensor, last_x0: Tensor, schedule: Schedule, last_step_stochastic: bool, eta: float
) -> Tensor:
    """The latent to decode and score: the final state, unless the last step was an SDE step
    whose noise would still show (std above DECODE_NOISE_TOLERANCE); then the model's clean
    estimate at that step, as DanceGRPO decodes (`pred_original_sample` of its last step)."""
    last = schedule.steps - 1
    if last_step_stochastic and schedule.step_std(last, eta) > DECODE_NOISE_TOLERANCE:
        return last_x0
    return final


def zero_std_fraction(total: Tensor, groups: Tensor) -> float:
    """Fraction of prompt groups whose rewards are all equal (no signal for GRPO)."""
    groups_seen = torch.unique(groups)
    flat = [float(total[groups == g].double().std(unbiased=False)) == 0.0 for g in groups_seen]
    return sum(flat) / max(1, len(flat))
