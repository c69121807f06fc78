"""SQLAlchemy 2 typed models (ARCHITECTURE.md section 5). Alembic migrations make the schema.

Paths in rows are relative to the artifact store; the API never serves anything outside it.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAME_CHARS = 200
PROMPT_CHARS = 500
PATH_CHARS = 1024


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out; SQLite hands back naive values, PostgreSQL aware ones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobKind(enum.StrEnum):
    train = "train"
    sample = "sample"
    evaluate = "evaluate"


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    cancelling = "cancelling"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    interrupted = "interrupted"
    lost = "lost"


ACTIVE_STATUSES = frozenset({JobStatus.queued, JobStatus.running, JobStatus.cancelling})
FINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})
RESUMABLE_STATUSES = frozenset(
    {JobStatus.interrupted, JobStatus.failed, JobStatus.cancelled, JobStatus.lost}
)


class KeyRole(enum.StrEnum):
    """What an API key may do (README "Roles"); each may also do all that the one before it may."""

    viewer = "viewer"  # reads only
    member = "member"  # also submits, and manages the runs it made
    admin = "admin"  # also manages everyone's runs, keys and secrets


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_created", "created_at"),
        # An Idempotency-Key is the submitting key's own: another key's use of the same string
        # is a different request (migration 0005; before it the string was global).
        UniqueConstraint("owner_key_id", "idempotency_key", name="uq_jobs_owner_idempotency_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(NAME_CHARS), default="")
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued.value)
    preset: Mapped[str | None] = mapped_column(String(NAME_CHARS), nullable=True)
    # The fully resolved RunConfig, frozen at creation.
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Kind-specific parameters (a branch's tree and node, a checkpoint epoch, ...).
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    algorithm: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    worker: Mapped[str | None] = mapped_column(String(NAME_CHARS), nullable=True)
    # Increases by one at every claim; a stale process compares it before writing.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    progress_step: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    parent_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True, index=True
    )
    checkpoint_path: Mapped[str | None] = mapped_column(String(PATH_CHARS), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(NAME_CHARS), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The last reward_mean point and its step, kept here by crud.upsert_metrics so that reads
    # of a job (and of a page of 50) need no metrics lookup.
    latest_reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    latest_reward_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Run management (PATCH /jobs/{id}): free tags and notes. A deleted job keeps its row
    # (soft delete) with `deleted_at` set; the API hides it and a worker removes its artifacts.
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    notes: Mapped[str] = mapped_column(Text, default="")
    deleted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # When a worker removed a deleted job's artifacts (after the grace period that lets a
    # delete be undone, TREEGRPO_DELETE_GRACE_SECONDS): a purged job can no longer be restored.
    purged_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # The API key that submitted the job (its name is the owner the API shows). Null for jobs
    # made before migration 0005, or by code that holds no key, and when the key row is gone.
    owner_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL", name="fk_jobs_owner_key_id_api_keys"),
        nullable=True,
        index=True,
    )

    # The experiment (a grid of runs) this job is one run of, and its group there: the runs
    # that differ only in their seed share a group (migration 0008).
    experiment_id: Mapped[int | None] = mapped_column(
        ForeignKey("experiments.id", ondelete="SET NULL", name="fk_jobs_experiment_id"),
        nullable=True,
        index=True,
    )
    experiment_group: Mapped[str | None] = mapped_column(String(NAME_CHARS), nullable=True)

    metrics: Mapped[list[Metric]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True
    )


class Experiment(Base):
    """A grid of training runs: a base preset and overrides, axes, a budget and a held-out
    yardstick every run shares (eval count and noise seed). Its runs are jobs that point here."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_CHARS), default="")
    preset: Mapped[str | None] = mapped_column(String(NAME_CHARS), nullable=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # base overrides
    axes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # {"epochs": N} or {"seconds": S}; and {"count", "noise_seed", "every"} of the evaluation
    budget: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    evaluation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    owner_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL", name="fk_experiments_owner_key_id"),
        nullable=True,
    )


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (
        UniqueConstraint("job_id", "step", "name", name="uq_metrics_job_step_name"),
        Index("ix_metrics_job_name_step", "job_id", "name", "step"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(NAME_CHARS))
    value: Mapped[float] = mapped_column(Float)

    job: Mapped[Job] = relationship(back_populates="metrics")


class Tree(Base):
    __tablename__ = "trees"
    __table_args__ = (
        UniqueConstraint("job_id", "epoch", "index", name="uq_trees_job_epoch_index"),
        Index("ix_trees_job_epoch", "job_id", "epoch"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    index: Mapped[int] = mapped_column(Integer, default=0)  # tree number within its epoch
    prompt: Mapped[str] = mapped_column(String(PROMPT_CHARS))
    seed: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[int] = mapped_column(Integer)
    k: Mapped[int] = mapped_column(Integer)
    depth: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    backup: Mapped[str] = mapped_column(String(32), default="mean")
    # Folder of this tree in the artifact store (tree.json, images/, latents/).
    artifact_dir: Mapped[str | None] = mapped_column(String(PATH_CHARS), nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the operator's retention (TREEGRPO_KEEP_TREE_LATENTS) deleted this tree's latents
    # (its nodes' latent_path are null since): it can no longer be branched. Null: kept.
    latents_dropped_at: Mapped[datetime | None] = mapped_column(nullable=True)

    nodes: Mapped[list[TreeNode]] = relationship(
        back_populates="tree",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="TreeNode.id",
    )


class TreeNode(Base):
    __tablename__ = "tree_nodes"
    __table_args__ = (
        UniqueConstraint("tree_id", "node_index", name="uq_tree_nodes_tree_index"),
        Index("ix_tree_nodes_parent", "parent_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tree_id: Mapped[int] = mapped_column(ForeignKey("trees.id", ondelete="CASCADE"))
    # The node's number inside its tree (TreeNodeRecord.id; branches append after the last).
    node_index: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("tree_nodes.id", ondelete="CASCADE"), nullable=True
    )
    depth: Mapped[int] = mapped_column(Integer)
    step_index: Mapped[int] = mapped_column(Integer)
    t: Mapped[float] = mapped_column(Float)
    sigma: Mapped[float] = mapped_column(Float)
    is_leaf: Mapped[bool] = mapped_column(Boolean, default=False)
    log_prob_old: Mapped[float | None] = mapped_column(Float, nullable=True)
    reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    rewards: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    advantage: Mapped[float | None] = mapped_column(Float, nullable=True)
    image_path: Mapped[str | None] = mapped_column(String(PATH_CHARS), nullable=True)
    latent_path: Mapped[str | None] = mapped_column(String(PATH_CHARS), nullable=True)
    # Unused since migration 0004 (branch results are Branch / BranchNode rows); kept so that
    # older databases need no column rebuild. Always null for new rows.
    branch_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True, index=True
    )

    tree: Mapped[Tree] = relationship(back_populates="nodes")


class Branch(Base):
    """One branch job's result, beside the training tree it grew from: the training tree's own
    nodes, rewards and summary never change. The row exists from the branch's submission on
    (its nodes arrive when the job finishes)."""

    __tablename__ = "branches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    tree_id: Mapped[int] = mapped_column(ForeignKey("trees.id", ondelete="CASCADE"), index=True)
    # The origin: a training node, or a node another branch grew (exactly one is set).
    node_id: Mapped[int | None] = mapped_column(
        ForeignKey("tree_nodes.id", ondelete="CASCADE"), nullable=True
    )
    # No foreign key (the two tables would refer to each other); the tree's cascade covers it.
    from_branch_node_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    k: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The policy the branch job sampled with, set when it starts (workers/kinds.py): {"job_id",
    # "epoch", "checkpoint", "tree_epoch", "text"}; null before.
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    nodes: Mapped[list[BranchNode]] = relationship(
        back_populates="branch",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="BranchNode.id",
        foreign_keys="BranchNode.branch_id",
    )


class BranchNode(Base):
    """A node a branch grew. `parent_id` None: a child of the branch's origin node."""

    __tablename__ = "branch_nodes"
    __table_args__ = (
        UniqueConstraint("branch_id", "node_index", name="uq_branch_nodes_branch_index"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    branch_id: Mapped[int] = mapped_column(
        ForeignKey("branches.id", ondelete="CASCADE"), index=True
    )
    node_index: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("branch_nodes.id", ondelete="CASCADE"), nullable=True
    )
    depth: Mapped[int] = mapped_column(Integer)
    step_index: Mapped[int] = mapped_column(Integer)
    t: Mapped[float] = mapped_column(Float)
    sigma: Mapped[float] = mapped_column(Float)
    is_leaf: Mapped[bool] = mapped_column(Boolean, default=False)
    log_prob_old: Mapped[float | None] = mapped_column(Float, nullable=True)
    reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    rewards: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    advantage: Mapped[float | None] = mapped_column(Float, nullable=True)
    image_path: Mapped[str | None] = mapped_column(String(PATH_CHARS), nullable=True)
    latent_path: Mapped[str | None] = mapped_column(String(PATH_CHARS), nullable=True)

    branch: Mapped[Branch] = relationship(back_populates="nodes", foreign_keys=[branch_id])


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("job_id", "epoch", "index", name="uq_samples_job_epoch_index"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    index: Mapped[int] = mapped_column(Integer, default=0)
    prompt: Mapped[str] = mapped_column(String(PROMPT_CHARS))
    reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    rewards: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    image_path: Mapped[str] = mapped_column(String(PATH_CHARS))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'member', 'viewer')", name="ck_api_keys_role"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_CHARS))
    # First characters of the key, shown in listings so a user can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16))
    hashed_key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # A KeyRole value. Keys made before migration 0005 became admin (they could do everything).
    role: Mapped[str] = mapped_column(String(16))


class AuditEntry(Base):
    """One mutation: who (the key, and its name at the time, which outlives a revoked or renamed
    key; a CLI change on the server names the operator instead), what and when. Rows are only
    ever added."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_action_at", "action", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL", name="fk_audit_log_key_id_api_keys"),
        nullable=True,
        index=True,
    )
    key_name: Mapped[str] = mapped_column(String(NAME_CHARS))
    # A dotted verb: job.submit, job.cancel, key.create, secret.set, ...
    action: Mapped[str] = mapped_column(String(64))
    target_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    target_id: Mapped[str | None] = mapped_column(String(NAME_CHARS), nullable=True)
    # What changed, never a secret's value or a key's plaintext.
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Secret(Base):
    """A server-side secret (`treegrpo secret set NAME`), sealed with the settings' secrets_key
    (Fernet: AES-128-CBC and HMAC-SHA256); a config names it as `<field>_secret: NAME` and only
    workers open it. No API route reads this table."""

    __tablename__ = "secrets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_CHARS), unique=True)
    sealed: Mapped[str] = mapped_column(Text)
    # Host names or patterns the value may be sent to; [] sends it nowhere. Secrets stored before
    # migration 0005 got [] and stay unusable until an admin names their hosts.
    hosts: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobNode(Base):
    """One machine of a multi-node attempt (`nodes > 1`): node 0 is the worker that claimed the
    job and hosts the torchrun rendezvous; the others claim their slot with one conditional
    UPDATE (workers/gang.py). Rows of an earlier attempt stay, as the history of who ran it."""

    __tablename__ = "job_nodes"
    __table_args__ = (
        UniqueConstraint("job_id", "attempt", "node_rank", name="uq_job_nodes_attempt_rank"),
        Index("ix_job_nodes_job_attempt", "job_id", "attempt"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    node_rank: Mapped[int] = mapped_column(Integer)
    # open (waiting for a worker) -> claimed -> done | failed; `abandoned` when the gang did not
    # form in time and the job went back to the queue.
    status: Mapped[str] = mapped_column(String(16), default="open")
    worker: Mapped[str | None] = mapped_column(String(NAME_CHARS), nullable=True)
    host: Mapped[str | None] = mapped_column(String(NAME_CHARS), nullable=True)
    # Node 0's rendezvous port (c10d store on host:port); null on the other nodes.
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class Dataset(Base):
    """One imported version of a prompt dataset (treegrpo/datasets/). Its files live in the
    artifact store under `datasets/<sha256>/`, written before this row: a row always names a
    finished version. Importing other content under the same name adds a version; `name`
    then means the newest."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("name", "sha256", name="uq_datasets_name_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(NAME_CHARS), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    rows: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(Integer)
    # split -> row count; the metadata columns (every column but the prompt); where it came from.
    splits: Mapped[dict[str, Any]] = mapped_column(JSON)
    columns: Mapped[list[str]] = mapped_column(JSON, default=list)
    source: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    owner_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), nullable=True
    )


class DatasetImport(Base):
    """How far a running dataset import has got, by the id its client chose (progress_id), so
    that any API process can answer GET /datasets/imports/{id}, not only the one running the
    import. The row lives while the import runs (backend/import_progress.py)."""

    __tablename__ = "dataset_imports"

    progress_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    phase: Mapped[str] = mapped_column(String(16))
    done: Mapped[int] = mapped_column(BigInteger, default=0)
    total: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobDataset(Base):
    """A job that reads a dataset version (its prompts or eval_prompts): while one exists, the
    dataset cannot be deleted."""

    __tablename__ = "job_datasets"
    __table_args__ = (UniqueConstraint("job_id", "dataset_id", name="uq_job_datasets"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
