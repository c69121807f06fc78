"""The backend's one settings object: environment variables prefixed TREEGRPO_, or a .env file.

Defaults are the embedded deployment (ARCHITECTURE.md section 7): everything under ./data, a
SQLite database and kombu's filesystem transport, so nothing needs to run beforehand.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from treegrpo.config import ConfigError
from treegrpo.egress import parse_hosts
from treegrpo.job_limits import JobLimits

DEFAULT_DATA_DIR = Path("data")
# `make up` on one machine: a `treegrpo reward-serve` (port 8100) and an MLflow server (5000) on
# loopback; no other local port (the API's own, Postgres, Redis) is reachable from a job.
DEFAULT_OUTBOUND_HOSTS = "127.0.0.1:8100,localhost:8100,[::1]:8100,127.0.0.1:5000,localhost:5000"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TREEGRPO_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR, description="Root of the embedded deployment's files."
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; default sqlite under data_dir. PostgreSQL: "
        "postgresql+psycopg://user@host/db",
    )
    broker_url: str = Field(
        default="",
        description="Celery broker; default kombu's filesystem transport under data_dir, "
        "redis://host:6379/0 in compose.",
    )
    artifact_dir: Path | None = Field(
        default=None, description="The artifact store (images, trees, checkpoints, logs)."
    )
    artifact_url: str | None = Field(
        default=None,
        description="An S3-compatible bucket for the artifact store, s3://bucket/prefix "
        "(credentials from the AWS_* variables); artifact_dir is then each worker's local cache.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="The S3 API's address for anything but AWS (MinIO, R2, ...)."
    )
    artifact_redirect: bool = Field(
        default=False,
        description="With a bucket: answer GET /artifacts/... with a redirect to a short-lived "
        "presigned URL instead of streaming the object through the API.",
    )
    artifact_redirect_seconds: int = Field(
        default=300, gt=0, le=7 * 24 * 3600, description="How long a presigned URL is valid."
    )
    reads_require_key: bool = Field(
        default=False, description="Require X-API-Key on GET routes too."
    )
    secrets_key: str | None = Field(
        default=None,
        description="Any long random string; seals server-side secrets (`treegrpo secret set`) "
        "in the database. The workers and the `treegrpo secret` command need it; the API "
        "process never reads a secret, so it does not.",
        repr=False,
    )
    serve_ui: bool = Field(
        default=True,
        description="Mount the dashboard at /ui in the API process (when one is installed). "
        "false: the API alone, as `treegrpo serve --workers N` needs: the dashboard keeps "
        "per-process state, so it runs as one process of its own (`python -m frontend`).",
    )
    access_log: Literal["quiet", "full"] = Field(
        default="quiet",
        description="quiet: the access log leaves out successful reads (the dashboard polls); "
        "full: every request.",
    )
    delete_grace_seconds: float = Field(
        default=86400.0,
        ge=0,
        description="How long a deleted run can be restored (POST /jobs/{id}/restore) before a "
        "worker purges its artifacts for good; 0 purges at once.",
    )
    # -- node latents kept for "branch again" (docs/BENCHMARKS.md, "Bytes per logged tree") -----
    latent_dtype: Literal["float32", "bfloat16"] = Field(
        default="float32",
        description="How workers store the latents a branch starts from: float32 (a branch "
        "starts from exactly the tree's state) or bfloat16 (half the bytes; a branch starts "
        "from the state rounded to bfloat16, so its children differ slightly from the ones "
        "the tree itself would have grown from the same noises).",
    )
    keep_tree_latents: int = Field(
        default=0,
        ge=0,
        description="Keep the latents of only each job's N newest logged trees: when a job "
        "logs a tree, its older trees' latents are deleted, and every worker's reconciler "
        "brings jobs over the limit within it (a limit set or lowered later reaches finished "
        "runs too). Images, atlas and rows stay; the inspector says such a tree can no longer "
        "be branched. 0: every tree keeps them.",
    )
    interactive_cache_seconds: float = Field(
        default=600.0,
        ge=0,
        description="How long the interactive lane keeps a loaded policy after its last use.",
    )
    heartbeat_seconds: float = Field(default=5.0, gt=0, description="Worker heartbeat period.")
    stale_after_seconds: float = Field(
        default=120.0, gt=0, description="A running job whose heartbeat is older is `lost`."
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A running job's lease: a redelivered message may take over a job with a "
        "checkpoint whose heartbeat is older than this (its worker is presumed dead); while the "
        "heartbeat is fresher, the message waits and comes back.",
    )
    broker_visibility_timeout: float | None = Field(
        default=None,
        gt=0,
        description="Seconds after which Redis hands an unacknowledged message to another "
        "worker; default max_job_seconds + 1 h (never while a job runs). Tests set it short.",
    )
    node_addr: str | None = Field(
        default=None,
        description="This machine's address as the other machines of a multi-node job reach "
        "it (rendezvous and process group); default: the host name.",
    )
    gang_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        description="How long node 0 of a multi-node job waits for the other workers to join; "
        "then the job goes back to the queue, so half-formed gangs never hold each other up.",
    )
    cancel_grace_seconds: float = Field(
        default=20.0, gt=0, description="After a cancel, how long before the trainer is killed."
    )
    max_job_seconds: int = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="Longest job; the broker's visibility timeout is set above it.",
    )
    sse_poll_seconds: float = Field(
        default=0.5, gt=0, description="How often /events looks for news in the database."
    )
    sse_keepalive_seconds: float = Field(
        default=15.0, gt=0, description="Idle time after which /events sends a keep-alive comment."
    )
    sse_max_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="An /events stream closes after this long (the client reconnects with "
        "since_step), so no connection is held forever.",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest accepted request body (413 above it)."
    )
    max_dataset_bytes: int = Field(
        default=2 * 1024**3,
        gt=0,
        description="Largest prompt-dataset upload (POST /datasets/upload), streamed to disk "
        "and never held in memory; 413 above it.",
    )
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins.")
    max_queued_per_key: int = Field(
        default=100,
        ge=0,
        description="Most jobs one API key may have waiting in a queue; a submission beyond it "
        "is a 429 with Retry-After. 0: no limit.",
    )
    quota_retry_seconds: int = Field(
        default=30,
        gt=0,
        description="The Retry-After of a 429 for a full per-key queue.",
    )

    # -- what a job sent through the API may reach (docs/API.md "Operator lists") ----------------
    outbound_hosts: str = Field(
        default=DEFAULT_OUTBOUND_HOSTS,
        description="Hosts jobs may connect to (remote rewards, MLflow), comma-separated: "
        "host:port, host (the scheme's default port) or host:* (any port). Default: a "
        "reward-serve and an MLflow server on loopback.",
    )
    referable_env: str = Field(
        default="",
        description="Worker environment variables a job may name as <field>_env, "
        "comma-separated; empty: none.",
    )
    model_roots: str | None = Field(
        default=None,
        description="Folders whose files jobs may name (model, reward paths, prompt files), "
        "comma-separated; default ./models, the Hugging Face cache and data_dir/datasets.",
    )

    @field_validator("outbound_hosts")
    @classmethod
    def _hosts_parse(cls, value: str) -> str:
        parse_hosts(value)  # a ValueError names the bad entry
        return value

    @property
    def job_limits(self) -> JobLimits:
        return JobLimits(
            hosts=parse_hosts(self.outbound_hosts),
            referable_env=frozenset(_items(self.referable_env)),
            roots=self.resolved_model_roots,
            hub_cache=hub_cache_folder(),
        )

    @property
    def resolved_model_roots(self) -> tuple[Path, ...]:
        if self.model_roots is not None:
            return tuple(Path(item).expanduser().resolve() for item in _items(self.model_roots))
        return (
            Path("models").resolve(),
            hub_cache_folder(),
            (self.data_dir / "datasets").resolve(),
        )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'treegrpo.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        """The filesystem transport's message folder (shared by API and workers)."""
        return (self.data_dir / "broker").resolve()

    @property
    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def hub_cache_folder() -> Path:
    """The Hugging Face cache the workers read hub ids from (HF_HUB_CACHE / HF_HOME)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser().resolve()


def load_settings() -> Settings:
    """Settings from the environment and .env; a bad value raises ConfigError naming the
    variable (the `treegrpo` command prints it as one line instead of a traceback)."""
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "TREEGRPO_" + "_".join(str(part) for part in error["loc"]).upper()
        raise ConfigError(name, f"{error['msg']}, got {error.get('input')!r}") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
