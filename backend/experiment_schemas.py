"""Request and answer bodies of /experiments (one resource, its own module)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from backend.job_params import MAX_EVAL_IMAGES, MAX_ID
from backend.models import NAME_CHARS

# Held-out images per evaluation by default: on digits the base model's per-image reward has a
# standard deviation of 0.338, so its mean has a standard error under 0.005 from 4,600 images
# (treegrpo/heldout.py DIGITS_SE_COUNT; docs/BENCHMARKS.md "Experiments").
DEFAULT_EVAL_COUNT = 4600
DEFAULT_EVAL_EVERY = 10


class ExperimentBudget(BaseModel):
    """Per run: `epochs`, or `seconds` of training (the trainer's clock; the run stops before an
    epoch would overrun it, its config's epochs still capping it)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int | None = Field(default=None, ge=1, le=1_000_000)
    seconds: float | None = Field(default=None, gt=0, le=1e7)

    @model_validator(mode="after")
    def _one(self) -> ExperimentBudget:
        if (self.epochs is None) == (self.seconds is None):
            raise ValueError("give exactly one of epochs and seconds")
        return self


class ExperimentEval(BaseModel):
    """The held-out yardstick every run shares: the same prompts and the same noise."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(
        default=DEFAULT_EVAL_COUNT,
        ge=1,
        le=MAX_EVAL_IMAGES,
        description="Held-out images per evaluation (default: a standard error < 0.005 on the "
        "digits base reward).",
    )
    noise_seed: int = Field(default=0, ge=0, le=MAX_ID, description="Seed of the shared noise.")
    every: int = Field(
        default=DEFAULT_EVAL_EVERY, ge=1, le=MAX_ID, description="Epochs between evaluations."
    )


class ExperimentCreate(BaseModel):
    """POST /experiments: a base (preset + overrides) and axes, expanded into one train job per
    combination. `experiment_preset` starts from a named experiment (GET /experiments/presets)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "four methods",
                    "axes": {
                        "preset": ["digits-treegrpo", "digits-dancegrpo"],
                        "seed": [0, 1, 2],
                    },
                    "budget": {"seconds": 60},
                    "eval": {"count": 256, "every": 2},
                },
                {"experiment_preset": "digits-lora"},
            ]
        },
    )

    name: str | None = Field(default=None, max_length=NAME_CHARS)
    experiment_preset: str | None = Field(default=None, max_length=NAME_CHARS)
    preset: str | None = Field(default=None, max_length=NAME_CHARS, description="Base preset.")
    config: dict[str, Any] = Field(default_factory=dict, description="Base overrides.")
    axes: dict[str, list[Any]] = Field(
        default_factory=dict,
        description='Setting path (or "preset") -> values; "seed" is the replicate axis.',
    )
    budget: ExperimentBudget | None = None
    eval: ExperimentEval | None = None
    reference_group: str | None = Field(
        default=None, max_length=NAME_CHARS, description="Paired ratios against this group."
    )


class ExperimentRun(BaseModel):
    job_id: int
    name: str
    group: str | None
    seed: int | None
    status: str
    progress_step: int
    progress_total: int


class ExperimentPublic(BaseModel):
    id: int
    name: str
    preset: str | None
    config: dict[str, Any]
    axes: dict[str, Any]
    budget: dict[str, Any]
    evaluation: dict[str, Any]
    created_at: str
    status_counts: dict[str, int]
    runs: list[ExperimentRun] = Field(default_factory=list)
    statistics: dict[str, Any] | None = None


class ExperimentsPublic(BaseModel):
    data: list[ExperimentPublic]
    count: int
