"""The REST API's request and answer shapes (docs/API.md), apart from the SQLAlchemy models.

Requests forbid unknown keys and bound every string; answers are built from rows by the
`*_public` functions so routes and the /events stream serialise a job the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import quote

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import RowMapping

from backend.crud.jobs import lane_of
from backend.models import (
    NAME_CHARS,
    Branch,
    BranchNode,
    Job,
    JobStatus,
    Sample,
    Tree,
)
from treegrpo.atlas import drawable
from treegrpo.branchable import branch_refusal
from treegrpo.epochs import logging_schedule as next_logs
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


TAG_PATTERN = r"^[^\x00-\x1f\x7f\"\\]{1,50}$"
Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN), AfterValidator(_storable)]
MAX_NOTES_CHARS = 10_000


class JobUpdate(_Request):
    """PATCH /jobs/{id}: any of name, tags, notes; a field left out keeps its value."""

    name: Name | None = Field(default=None, description="New name.")
    tags: list[Tag] | None = Field(
        default=None,
        max_length=20,
        description="Replaces the tags (1..50 chars each, no quotes, backslashes or control "
        "characters; duplicates dropped).",
    )
    notes: (
        Annotated[str, StringConstraints(max_length=MAX_NOTES_CHARS), AfterValidator(_storable)]
        | None
    ) = Field(default=None, description="Free text notes.")


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
    tags: list[str] = Field(description="Free tags (PATCH).")
    notes: str = Field(description="Free notes (PATCH).")
    lane: Literal["training", "interactive"] = Field(
        description="The queue the job goes to: sample jobs (branches too) are interactive."
    )
    queue_position: int | None = Field(
        description="While queued: 1 = the next job of its lane to start; else null."
    )
    owner_key_id: int | None = Field(
        default=None,
        description="The API key that submitted the job (null: made before roles existed).",
    )
    owner: str | None = Field(
        default=None, description="That key's name, which the dashboard shows as the owner."
    )


class LoggingSchedule(BaseModel):
    """When a train job logs next (the final epoch always logs all three)."""

    epochs: int
    sample_every: int
    log_tree_every: int
    checkpoint_every: int
    next_gallery_epoch: int | None = Field(description="Next gallery (sample epoch numbering).")
    next_tree_epoch: int | None = Field(description="Next logged trees (tree epoch numbering).")
    next_checkpoint_epoch: int | None


class JobNodePublic(BaseModel):
    """One machine of a multi-node job's latest attempt."""

    node_rank: int = Field(description="0: the worker that took the job (rendezvous host).")
    attempt: int
    status: Literal["open", "claimed", "done", "failed", "abandoned"]
    worker: str | None
    host: str | None
    heartbeat_at: datetime | None
    error: str | None


class JobPublic(JobSummary):
    """One job, with its fully resolved config."""

    config: dict[str, Any] = Field(description="The fully resolved config, frozen at creation.")
    schedule: LoggingSchedule | None = Field(
        default=None, description="Train jobs: when the next gallery, trees and checkpoint come."
    )
    nodes: list[JobNodePublic] = Field(
        default_factory=list,
        description="A job with nodes > 1: its machines in the latest attempt (empty otherwise).",
    )


NODE_FIELDS = tuple(JobNodePublic.model_fields)


def node_fields(nodes: Sequence[Any]) -> list[dict[str, Any]]:
    """JobPublic.nodes as plain JSON-ready values, from crud.list_nodes rows."""
    return [{name: getattr(node, name) for name in NODE_FIELDS} for node in nodes]


class JobsPublic(BaseModel):
    data: list[JobSummary]
    count: int


class DeletedJobPublic(BaseModel):
    """A deleted run that can still be restored (POST /jobs/{id}/restore) until `purge_after`."""

    id: int
    kind: str
    name: str
    status: JobStatusName
    algorithm: str
    owner_key_id: int | None
    deleted_at: datetime
    purge_after: datetime = Field(
        description="From then on a worker may purge its artifacts; it cannot be restored after."
    )


class DeletedJobsPublic(BaseModel):
    data: list[DeletedJobPublic]
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
    latents_dropped_at: datetime | None = Field(
        default=None,
        description="When the operator's retention (TREEGRPO_KEEP_TREE_LATENTS) deleted this "
        "tree's latents: its nodes can no longer be branched. Null: kept.",
    )
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
    branchable: bool = Field(
        default=False,
        description="Whether POST .../branch can grow children from this node (it has a "
        "stored latent and is not a leaf).",
    )
    branch_refusal: str | None = Field(
        default=None,
        description='Why it cannot, after the node\'s name ("is a leaf: ...", "has no '
        'stored latent: ..."); the 409 a branch from it answers says the same. Null: it can.',
    )
    branch_job_id: int | None = Field(
        description="Always null: branch results are in TreePublic.branches (kept for old clients)."
    )


class BranchNodePublic(BaseModel):
    """A node a branch grew; ids are branch_nodes ids (not tree node ids)."""

    id: int
    node_index: int
    parent_id: int | None = Field(description="Its parent branch node; null: the origin's child.")
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
    branchable: bool = Field(
        default=False,
        description="Whether POST .../branch can grow children from this node (it has a "
        "stored latent and is not a leaf).",
    )
    branch_refusal: str | None = Field(
        default=None,
        description='Why it cannot, after the node\'s name ("is a leaf: ...", "has no '
        'stored latent: ..."); the 409 a branch from it answers says the same. Null: it can.',
    )


class BranchPublic(BaseModel):
    """A branch job's result beside the training tree (which it never changes)."""

    id: int
    job_id: int
    job_status: JobStatusName
    tree_id: int
    node_id: int | None = Field(description="The training node it grew from, or null.")
    from_branch_node_id: int | None = Field(description="The branch node it grew from, or null.")
    k: int
    created_at: datetime
    leaves: int
    best_reward: float | None
    mean_reward: float | None
    policy: dict[str, Any] | None = Field(
        default=None,
        description="The policy that grew the branch, once its job started: {job_id, epoch, "
        "checkpoint (false: a base model), tree_epoch (the training tree's policy epoch: it "
        "differs when that epoch was not checkpointed), text}.",
    )
    nodes: list[BranchNodePublic]


class AtlasIndex(BaseModel):
    """Where each node's thumbnail sits in a tree's atlas (GET /trees/{id}/atlas)."""

    version: int
    format: Literal["jpeg", "png"]
    tile: int = Field(description="Tile side in pixels.")
    columns: int
    width: int
    height: int
    slots: dict[str, int] = Field(
        description="Node id -> slot; tile s at x = (s % columns) * tile, y = (s // columns) * tile."
    )
    etag: str = Field(description="The atlas image's ETag: GET /trees/{id}/atlas?v=<etag>.")


class BranchesPublic(BaseModel):
    data: list[BranchPublic]
    count: int


class QueueCounts(BaseModel):
    queued: int
    running: int


class QueuesPublic(BaseModel):
    training: QueueCounts
    interactive: QueueCounts


class CompareItem(BaseModel):
    index: int
    prompt: str
    reward: float | None
    image_url: str


class CompareRun(BaseModel):
    job_id: int
    name: str
    algorithm: str
    seed: int | None
    epoch: int | None = Field(description="The gallery epoch shown (null: the run has none).")
    epochs: list[int]
    items: list[CompareItem]


class CompareGalleryPublic(BaseModel):
    epoch: int | None
    same_noise: bool = Field(description="Equal seeds and prompts: only the policy differs.")
    prompts: list[str]
    runs: list[CompareRun]


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
    latents_dropped_at: datetime | None = Field(
        default=None,
        description="When the operator's retention (TREEGRPO_KEEP_TREE_LATENTS) deleted this "
        "tree's latents: its nodes can no longer be branched. Null: kept.",
    )
    leaves: int
    best_reward: float | None
    mean_reward: float | None
    nodes: list[TreeNodePublic] = Field(description="The training tree's nodes only.")
    branches: list[BranchPublic] = Field(
        default_factory=list, description="Branch results beside the tree, oldest first."
    )


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


def job_fields(
    row: Mapping[str, Any] | RowMapping, queue_position: int | None = None
) -> dict[str, Any]:
    """A JobSummary as plain JSON-ready values, from a crud.job_rows mapping or a dict of Job
    columns: the hot read routes encode this with orjson without building a pydantic model
    (tests/backend/test_api_cheap_reads.py holds it equal to the model's own dump).
    `queue_position` comes from crud.queue_positions (None when not queued)."""
    fields = {name: row[name] for name in _SUMMARY_COLUMNS}
    fields["params"] = fields["params"] or {}
    fields["progress"] = _progress(row)
    fields["latest_reward"] = _finite(row["latest_reward"])
    fields["tags"] = list(fields["tags"] or [])
    fields["notes"] = fields["notes"] or ""
    fields["lane"] = lane_of(row["kind"])
    fields["queue_position"] = queue_position if row["status"] == JobStatus.queued.value else None
    fields["owner"] = row.get("owner")
    return fields


def logging_schedule(
    row: Mapping[str, Any] | RowMapping, config: Mapping[str, Any]
) -> dict[str, Any] | None:
    """When a train job logs next, from its frozen config and epochs done (progress_step)."""
    if row["kind"] != "train":
        return None
    try:
        every = {
            name: int(config[name])
            for name in ("epochs", "sample_every", "log_tree_every", "checkpoint_every")
        }
    except (KeyError, TypeError, ValueError):
        return None
    due = next_logs(
        epochs=every["epochs"],
        epochs_done=int(row["progress_step"] or 0),
        sample_every=every["sample_every"],
        log_tree_every=every["log_tree_every"],
        checkpoint_every=every["checkpoint_every"],
    )
    return {**every, **due}


def job_public(
    job: Job | Mapping[str, Any] | RowMapping,
    queue_position: int | None = None,
    owner: str | None = None,
    nodes: Sequence[Mapping[str, Any]] = (),
) -> JobPublic:
    """From an ORM Job (with its owner's key name, which the row does not hold), or from a
    mapping of every Job column and `owner` (crud.job_rows(with_config=True) gives one, with the
    config decoded)."""
    row: Mapping[str, Any]
    if isinstance(job, Mapping | RowMapping):
        row = job  # type: ignore[assignment]
    else:
        row = {**{column: getattr(job, column) for column in _JOB_COLUMNS}, "owner": owner}
    schedule = logging_schedule(row, row["config"])
    return JobPublic(
        **job_fields(row, queue_position),
        config=redact(row["config"]),
        schedule=LoggingSchedule.model_validate(schedule) if schedule else None,
        nodes=[JobNodePublic.model_validate(node) for node in nodes],
    )


_SUMMARY_COLUMNS = tuple(field for field in JobSummary.model_fields if field in Job.__table__.c)


RoleName = Literal["admin", "member", "viewer"]


class MePublic(BaseModel):
    """GET /me: the caller's key and what its role allows (README "Roles")."""

    key_id: int
    name: str
    role: RoleName
    can_submit: bool = Field(description="Submit jobs and branches (member, admin).")
    can_manage_all: bool = Field(
        description="Cancel, resume, edit and delete every run, not only its own (admin)."
    )
    can_read_audit: bool = Field(description="GET /audit (admin).")


class KeyCreate(_Request):
    """POST /keys (admin)."""

    name: PresetName = Field(description="Who or what the key is for.")
    role: RoleName = Field(default="member", description="What the key may do (README Roles).")


class KeyPublic(BaseModel):
    id: int
    name: str
    role: RoleName
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyPublic):
    key: str = Field(description="The key itself: shown this once, only its hash is stored.")


class KeysPublic(BaseModel):
    data: list[KeyPublic]
    count: int


class AuditEntryPublic(BaseModel):
    id: int
    at: datetime
    key_id: int | None = Field(description="The key that acted; null for a CLI operator.")
    key_name: str = Field(description="Its name at the time, or cli:<user> for the CLI.")
    action: str = Field(description="job.submit, job.cancel, key.create, secret.set, ...")
    target_kind: str | None
    target_id: str | None
    detail: dict[str, Any]


class AuditPublic(BaseModel):
    data: list[AuditEntryPublic]
    count: int


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
        "latents_dropped_at": tree.latents_dropped_at,
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


class StoredNode(Protocol):
    """The columns a node answer reads: a TreeNode or BranchNode row object, or a plain row of
    tree_nodes' columns (crud.get_tree_rows)."""

    @property
    def id(self) -> int: ...
    @property
    def node_index(self) -> int: ...
    @property
    def parent_id(self) -> int | None: ...
    @property
    def depth(self) -> int: ...
    @property
    def step_index(self) -> int: ...
    @property
    def t(self) -> float: ...
    @property
    def sigma(self) -> float: ...
    @property
    def is_leaf(self) -> bool: ...
    @property
    def log_prob_old(self) -> float | None: ...
    @property
    def reward(self) -> float | None: ...
    @property
    def rewards(self) -> dict[str, Any] | None: ...
    @property
    def advantage(self) -> float | None: ...
    @property
    def image_path(self) -> str | None: ...
    @property
    def latent_path(self) -> str | None: ...


def node_branch_refusal(node: StoredNode, *, latents_dropped: bool) -> str | None:
    """treegrpo.branchable.branch_refusal of a stored node: why it cannot be branched, or None.
    `latents_dropped`: retention deleted its tree's latents (a training node's only)."""
    return branch_refusal(
        is_leaf=node.is_leaf,
        has_latent=node.latent_path is not None,
        latents_dropped=latents_dropped,
    )


def _node_fields(node: StoredNode, *, latents_dropped: bool = False) -> dict[str, Any]:
    """What a training node and a branch node answer alike."""
    refusal = node_branch_refusal(node, latents_dropped=latents_dropped)
    return {
        "id": node.id,
        "node_index": node.node_index,
        "parent_id": node.parent_id,
        "depth": node.depth,
        "step_index": node.step_index,
        "t": node.t,
        "sigma": node.sigma,
        "is_leaf": node.is_leaf,
        "log_prob": _finite(node.log_prob_old),
        "reward": _finite(node.reward),
        "rewards": node.rewards,
        "advantage": _finite(node.advantage),
        "image_url": artifact_url(node.image_path),
        "branchable": refusal is None,
        "branch_refusal": refusal,
    }


def node_public(
    node: StoredNode,
    *,
    latents_dropped: bool = False,
    drawn_parent: Mapping[int, int | None] | None = None,
) -> TreeNodePublic:
    """`node`: a TreeNode or a tuple of its columns (crud.get_tree_rows). With `drawn_parent`
    (drawn_parents), its parent is its nearest drawn ancestor."""
    fields = _node_fields(node, latents_dropped=latents_dropped)
    if drawn_parent is not None:
        fields["parent_id"] = drawn_parent[node.id]
    # Our own rows, already checked when they were written: no validation for 13,655 nodes.
    return TreeNodePublic.model_construct(**fields, branch_job_id=None)


def branch_node_public(node: BranchNode) -> BranchNodePublic:
    return BranchNodePublic(**_node_fields(node))


def _leaf_stats(nodes: Sequence[StoredNode]) -> tuple[int, float | None, float | None]:
    rewards = [
        node.reward
        for node in nodes
        if node.is_leaf and node.reward is not None and math.isfinite(node.reward)
    ]
    leaves = sum(1 for node in nodes if node.is_leaf)
    if not rewards:
        return leaves, None, None
    return leaves, max(rewards), sum(rewards) / len(rewards)


def branch_public(branch: Branch, job_status: str) -> BranchPublic:
    leaves, best, mean = _leaf_stats(list(branch.nodes))
    return BranchPublic(
        id=branch.id,
        job_id=branch.job_id,
        job_status=job_status,  # type: ignore[arg-type]
        tree_id=branch.tree_id,
        node_id=branch.node_id,
        from_branch_node_id=branch.from_branch_node_id,
        k=branch.k,
        created_at=branch.created_at,
        leaves=leaves,
        best_reward=best,
        mean_reward=mean,
        policy=branch.policy,
        nodes=[branch_node_public(node) for node in branch.nodes],
    )


def tree_public(
    tree: Tree,
    branches: Sequence[tuple[Branch, str]] = (),
    *,
    nodes: Sequence[StoredNode] | None = None,
    drawn: bool = False,
) -> TreePublic:
    """The training tree (its summary counts training nodes only) and its branches beside it.
    `nodes`: the tree's nodes when already read (crud.get_tree_rows), else `tree.nodes`;
    `drawn`: only the nodes a viewer draws (treegrpo/atlas.py), each joined to its nearest
    drawn ancestor."""
    every = list(tree.nodes if nodes is None else nodes)
    leaves, best, mean = _leaf_stats(every)
    dropped = tree.latents_dropped_at is not None
    if drawn:
        anchors = drawn_parents(every)
        public = [
            node_public(node, latents_dropped=dropped, drawn_parent=anchors)
            for node in every
            if node.id in anchors
        ]
    else:
        public = [node_public(node, latents_dropped=dropped) for node in every]
    return TreePublic(
        **_tree_fields(tree),
        leaves=leaves,
        best_reward=best,
        mean_reward=mean,
        nodes=public,
        branches=[branch_public(branch, status) for branch, status in branches],
    )


def drawn_parents(nodes: Sequence[StoredNode]) -> dict[int, int | None]:
    """For each drawable node (treegrpo/atlas.py: not an ODE-chain state), its nearest drawable
    ancestor (None for the root)."""
    shown = drawable((n.id, n.parent_id, _finite(n.log_prob_old) is not None) for n in nodes)
    parent = {n.id: n.parent_id for n in nodes}

    def anchor(node_id: int | None) -> int | None:
        seen = 0
        while node_id is not None and node_id not in shown and seen <= len(parent):
            node_id, seen = parent.get(node_id), seen + 1
        return node_id

    return {n.id: anchor(n.parent_id) for n in nodes if n.id in shown}


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
