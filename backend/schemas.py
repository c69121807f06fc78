"""The REST API's request and answer shapes (docs/API.md), apart from the SQLAlchemy models.

Requests forbid unknown keys and bound every string; answers are built from rows by the
`*_public` functions so routes and the /events stream serialise a job the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import RowMapping

from backend.models import NAME_CHARS, Job, JobStatus, Sample, Tree, TreeNode
from treegrpo.secrets import redact

API_PREFIX = "/api/v1"
# Ids are 32-bit integer columns; a larger number cannot name a row (and PostgreSQL would refuse
# to compare it), so path and body ids are bounded here.
MAX_ID = 2**31 - 1
MAX_INT = 2**31 - 1
MIN_INT = -(2**31)
# Query strings (metric names, ...): no NUL, which PostgreSQL cannot store or compare.
NO_NUL_PATTERN = r"^[^\x00]*$"

JobKindName = Literal["train", "sample", "evaluate"]
JobStatusName = Literal[
    "queued",
    "running",
    "cancelling",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
    "lost",
]


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored as text (NUL byte, lone surrogate), or None."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


def _storable(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


StorableText = Annotated[str, AfterValidator(_storable)]
Name = Annotated[str, StringConstraints(max_length=NAME_CHARS), AfterValidator(_storable)]
PresetName = Annotated[
    str, StringConstraints(min_length=1, max_length=NAME_CHARS), AfterValidator(_storable)
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobCreate(_Request):
    """POST /jobs. `config` holds dotted or nested overrides of the preset (treegrpo.config)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"kind": "train", "preset": "digits-treegrpo"},
                {
                    "kind": "train",
                    "name": "k=4, 20 epochs",
                    "preset": "tiny-treegrpo",
                    "config": {"epochs": 20, "tree.k": 4, "train": {"lr": 0.0005}},
                },
            ]
        },
    )

    kind: JobKindName = Field(default="train", description="train, sample or evaluate.")
    name: Name | None = Field(
        default=None, description="Free text shown in listings; default: the preset or kind."
    )
    preset: PresetName | None = Field(
        default=None, description="A preset name (GET /presets); null starts from the defaults."
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description='Overrides, dotted ({"tree.k": 4}) or nested ({"tree": {"k": 4}}).',
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Kind-specific parameters (backend/job_params.py)."
    )


class BranchCreate(_Request):
    """POST /trees/{id}/nodes/{node_id}/branch."""

    k: int = Field(default=3, ge=1, le=16, description="Children to regrow from the node.")
    name: Name | None = Field(default=None, description="Default: 'branch of tree T node N'.")


class JobSummary(BaseModel):
    """A job as GET /jobs lists it: everything but the frozen config (GET /jobs/{id} has it)."""

    id: int
    kind: str
    name: str
    status: JobStatusName
    preset: str | None
    algorithm: str
    params: dict[str, Any]
    parent_job_id: int | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    worker: str | None
    attempt: int
    progress_step: int
    progress_total: int
    progress: float = Field(ge=0, le=1, description="progress_step / progress_total, 0..1.")
    error: str | None
    checkpoint_path: str | None
    latest_reward: float | None = Field(description="The last reward_mean point, or null.")


class JobPublic(JobSummary):
    """One job, with its fully resolved config."""

    config: dict[str, Any] = Field(description="The fully resolved config, frozen at creation.")


class JobsPublic(BaseModel):
    data: list[JobSummary]
    count: int


class MetricPoint(BaseModel):
    step: int
    name: str
    value: float


class MetricsPublic(BaseModel):
    data: list[MetricPoint]
    count: int = Field(description="Matching points (data may be cut at `limit`).")
    names: list[str] = Field(description="Every metric name of the job.")


class TreeSummary(BaseModel):
    id: int
    job_id: int
    epoch: int
    index: int
    prompt: str
    seed: int
    window_start: int
    k: int
    depth: int
    steps: int
    backup: str
    created_at: datetime
    nodes: int
    leaves: int
    best_reward: float | None = Field(description="Highest leaf reward.")
    mean_reward: float | None = Field(description="Mean leaf reward.")


class TreesPublic(BaseModel):
    data: list[TreeSummary]
    count: int


class TreeNodePublic(BaseModel):
    id: int
    node_index: int
    parent_id: int | None
    depth: int
    step_index: int
    t: float
    sigma: float
    is_leaf: bool
    log_prob: float | None
    reward: float | None
    rewards: dict[str, Any] | None
    advantage: float | None
    image_url: str | None
    branch_job_id: int | None


class TreePublic(BaseModel):
    """A tree's summary fields, with `nodes` the list itself (its length is the node count)."""

    id: int
    job_id: int
    epoch: int
    index: int
    prompt: str
    seed: int
    window_start: int
    k: int
    depth: int
    steps: int
    backup: str
    created_at: datetime
    leaves: int
    best_reward: float | None
    mean_reward: float | None
    nodes: list[TreeNodePublic]


class SamplePublic(BaseModel):
    id: int
    epoch: int
    index: int
    prompt: str
    reward: float | None
    rewards: dict[str, Any] | None
    image_url: str


class SamplesPublic(BaseModel):
    data: list[SamplePublic]
    count: int
    epochs: list[int] = Field(description="Every epoch of the job that has samples.")


class NamesPublic(BaseModel):
    data: list[str]


class PresetPublic(BaseModel):
    name: str
    config: dict[str, Any]


class PresetsPublic(BaseModel):
    data: list[PresetPublic]


class PromptSetPublic(BaseModel):
    name: str
    prompts: list[str]


class PromptSetsPublic(BaseModel):
    data: list[PromptSetPublic]


class HealthPublic(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyPublic(BaseModel):
    database: str
    broker: str


class Problem(BaseModel):
    """RFC 9457 problem details (application/problem+json)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str


# ---------------------------------------------------------------------------------------------
# rows -> answers


def artifact_url(path: str | None) -> str | None:
    """The API URL of a file in the artifact store (rows keep store-relative paths)."""
    if not path:
        return None
    return f"{API_PREFIX}/artifacts/{quote(path, safe='/')}"


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity; a non-finite number is sent as null."""
    if value is None or not math.isfinite(value):
        return None
    return value


def _progress(row: Mapping[str, Any] | RowMapping) -> float:
    total, step = row["progress_total"], row["progress_step"]
    if total > 0:
        return float(min(1.0, max(0.0, step / total)))
    return 1.0 if row["status"] == JobStatus.succeeded.value else 0.0


def job_fields(row: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    """A JobSummary as plain JSON-ready values, from a crud.job_rows mapping or a dict of Job
    columns: the hot read routes encode this with orjson without building a pydantic model
    (tests/backend/test_api_cheap_reads.py holds it equal to the model's own dump)."""
    fields = {name: row[name] for name in _SUMMARY_COLUMNS}
    fields["params"] = fields["params"] or {}
    fields["progress"] = _progress(row)
    fields["latest_reward"] = _finite(row["latest_reward"])
    return fields


def job_public(job: Job | Mapping[str, Any] | RowMapping) -> JobPublic:
    """From an ORM Job, or from a mapping of every Job column (crud.job_rows(with_config=True)
    gives one, with the config decoded)."""
    row: Mapping[str, Any]
    if isinstance(job, Mapping | RowMapping):
        row = job  # type: ignore[assignment]
    else:
        row = {column: getattr(job, column) for column in _JOB_COLUMNS}
    return JobPublic(**job_fields(row), config=redact(row["config"]))


_SUMMARY_COLUMNS = tuple(field for field in JobSummary.model_fields if field in Job.__table__.c)
_JOB_COLUMNS = (*_SUMMARY_COLUMNS, "config")


def _tree_fields(tree: Tree) -> dict[str, Any]:
    return {
        "id": tree.id,
        "job_id": tree.job_id,
        "epoch": tree.epoch,
        "index": tree.index,
        "prompt": tree.prompt,
        "seed": tree.seed,
        "window_start": tree.window_start,
        "k": tree.k,
        "depth": tree.depth,
        "steps": tree.steps,
        "backup": tree.backup,
        "created_at": tree.created_at,
    }


def tree_summary(item: dict[str, Any]) -> TreeSummary:
    """From one entry of crud.list_trees: {tree, nodes, leaves, best_reward, mean_reward}."""
    return TreeSummary(
        **_tree_fields(item["tree"]),
        nodes=item["nodes"],
        leaves=item["leaves"],
        best_reward=_finite(item["best_reward"]),
        mean_reward=_finite(item["mean_reward"]),
    )


def node_public(node: TreeNode) -> TreeNodePublic:
    return TreeNodePublic(
        id=node.id,
        node_index=node.node_index,
        parent_id=node.parent_id,
        depth=node.depth,
        step_index=node.step_index,
        t=node.t,
        sigma=node.sigma,
        is_leaf=node.is_leaf,
        log_prob=_finite(node.log_prob_old),
        reward=_finite(node.reward),
        rewards=node.rewards,
        advantage=_finite(node.advantage),
        image_url=artifact_url(node.image_path),
        branch_job_id=node.branch_job_id,
    )


def tree_public(tree: Tree) -> TreePublic:
    leaf_rewards = [
        node.reward
        for node in tree.nodes
        if node.is_leaf and node.reward is not None and math.isfinite(node.reward)
    ]
    return TreePublic(
        **_tree_fields(tree),
        leaves=sum(1 for node in tree.nodes if node.is_leaf),
        best_reward=max(leaf_rewards) if leaf_rewards else None,
        mean_reward=sum(leaf_rewards) / len(leaf_rewards) if leaf_rewards else None,
        nodes=[node_public(node) for node in tree.nodes],
    )


def sample_public(sample: Sample) -> SamplePublic:
    return SamplePublic(
        id=sample.id,
        epoch=sample.epoch,
        index=sample.index,
        prompt=sample.prompt,
        reward=_finite(sample.reward),
        rewards=sample.rewards,
        image_url=artifact_url(sample.image_path) or "",
    )
