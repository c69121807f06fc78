"""Kind-specific job parameters, stored in jobs.params; shared by the API and the workers.

- train: no parameters (the config says everything); resume uses jobs.checkpoint_path. A run of
  an experiment has `experiment`: the shared held-out evaluation (treegrpo/heldout.py) after
  every `eval_every` epochs, outside the training clock, and an optional budget in seconds of
  training.
- sample: grow one or more logged trees (images and latents kept) for the config's prompts with
  the policy of `source_job_id`'s checkpoint (or the base model), or, with `branch`, regrow k
  children from one stored tree node.
  With `playground`, it instead samples N images of one prompt and seed from the base model and
  from the checkpoint, stored as two galleries (epoch 0 = base, epoch E = the checkpoint's) with
  every reward, for the dashboard's side-by-side Playground.
- evaluate: ODE samples of the held-out prompts with the config's eval settings (`eval.rewards`,
  `eval.steps`, fixed noise per prompt from `eval.seed`), from the policy of `source_job_id`'s
  checkpoint (or the base model), or from each of `models` in turn (the base model and any
  checkpoints) for a table of models x rewards: each reward's mean, std and Student t interval
  over the prompts. A checkpoint that keeps an EMA (train.ema) is sampled with its EMA weights
  unless the model says `ema: false`. One model's gallery and metrics are at its epoch; with
  several, model i's are at step i (the `evaluation/row` metric names the row).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_TREES = 64
MAX_PLAYGROUND_IMAGES = 16
MAX_PROMPT_CHARS = 500
MAX_EVAL_MODELS = 16
# Ids and epochs are 32-bit integer columns.
MAX_ID = 2**31 - 1


class BranchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tree_id: int = Field(ge=1, le=MAX_ID)
    node_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="tree_nodes.id of the node to branch from"
    )
    branch_node_id: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ID,
        description="or: branch_nodes.id of a node an earlier branch grew",
    )
    k: int = Field(default=3, ge=1, le=16, description="children to grow")

    @model_validator(mode="after")
    def _one_origin(self) -> BranchParams:
        if (self.node_id is None) == (self.branch_node_id is None):
            raise ValueError("give exactly one of node_id and branch_node_id")
        return self


class PlaygroundParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="the prompt")
    seed: int = Field(default=0, ge=0, le=MAX_ID, description="seed of the initial noises")
    images: int = Field(default=4, ge=1, le=MAX_PLAYGROUND_IMAGES, description="per model")


MAX_EVAL_IMAGES = 20_000


class ExperimentRunParams(BaseModel):
    """A train job that is one run of an experiment: its yardstick and its budget in seconds."""

    model_config = ConfigDict(extra="forbid")

    experiment_id: int = Field(ge=1, le=MAX_ID)
    group: str = Field(max_length=200)
    eval_count: int = Field(
        ge=1, le=MAX_EVAL_IMAGES, description="held-out images per evaluation (shared noise)"
    )
    eval_noise_seed: int = Field(ge=0, le=MAX_ID, description="the experiment's noise seed")
    eval_every: int = Field(default=1, ge=1, le=MAX_ID, description="epochs between evaluations")
    budget_seconds: float | None = Field(
        default=None, gt=0, le=1e7, description="stop before an epoch would overrun this"
    )


class TrainParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment: ExperimentRunParams | None = None


class SampleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_job_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    checkpoint_epoch: int | None = Field(default=None, ge=0, le=MAX_ID)
    trees: int = Field(
        default=1, ge=1, le=MAX_TREES, description="trees to grow (prompts taken in order)"
    )
    branch: BranchParams | None = None
    playground: PlaygroundParams | None = None


class EvaluateModel(BaseModel):
    """One row of an evaluation: the base model, or a job's checkpoint."""

    model_config = ConfigDict(extra="forbid")

    job_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="the trained job; null = the base model"
    )
    epoch: int | None = Field(
        default=None, ge=0, le=MAX_ID, description="its checkpoint; null = the latest"
    )
    ema: bool | None = Field(
        default=None,
        description="sample with the checkpoint's EMA weights; null = where it keeps them",
    )


class EvaluateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_job_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    checkpoint_epoch: int | None = Field(default=None, ge=0, le=MAX_ID)
    models: list[EvaluateModel] = Field(
        default_factory=list,
        max_length=MAX_EVAL_MODELS,
        description="models to compare, in table order (instead of source_job_id)",
    )
    samples_per_prompt: int | None = Field(
        default=None, ge=1, le=64, description="images per prompt; null = eval.images_per_prompt"
    )
    confidence: float = Field(
        default=0.95, ge=0.5, le=0.999, description="of the Student t intervals"
    )

    @model_validator(mode="after")
    def _one_way(self) -> EvaluateParams:
        if self.models and (self.source_job_id is not None or self.checkpoint_epoch is not None):
            raise ValueError("give either models or source_job_id (and checkpoint_epoch)")
        return self

    def rows(self) -> list[EvaluateModel]:
        """The models of the table: `models`, else the one source (the base model without)."""
        if self.models:
            return list(self.models)
        return [EvaluateModel(job_id=self.source_job_id, epoch=self.checkpoint_epoch)]


PARAMS_BY_KIND: dict[str, type[BaseModel]] = {
    "train": TrainParams,
    "sample": SampleParams,
    "evaluate": EvaluateParams,
}


def parse_params(kind: str, params: dict[str, Any] | None) -> BaseModel:
    """Validate (pydantic ValidationError on bad input) and return the kind's parameter model."""
    return PARAMS_BY_KIND[kind].model_validate(params or {})
