"""Job creation: validate the whole request, freeze the resolved config in the row, commit, and
only then send the job id to the workers (backend.queue).

The row is the truth. When the broker cannot take the message the job is marked `failed` with
an error saying so, and the caller gets a 503 naming the job: the same request sent again with
the same Idempotency-Key (or POST /jobs/{id}/resume) queues that job again once the broker is back.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from backend import crud, queue
from backend.api.dataset_refs import pin_datasets
from backend.api.job_limits import refuse_beyond_limits
from backend.api.problems import ProblemError, validation_error
from backend.errors import NotFound
from backend.job_params import parse_params
from backend.models import Job, JobStatus
from backend.schemas import BranchCreate, JobCreate, node_branch_refusal, text_problem
from backend.settings import Settings
from treegrpo.config import (
    ConfigError,
    RunConfig,
    config_errors,
    missing_tracker_packages,
    resolve_config,
)

log = logging.getLogger("backend.api")

ENQUEUE_FAILED = "not sent to the workers: the broker was unreachable"


def request_hash(body: BaseModel) -> str:
    """SHA-256 of the request's canonical JSON (sorted keys, defaults filled in)."""
    canonical = json.dumps(
        body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_texts(value: Any, loc: tuple[str | int, ...]) -> None:
    """Every string (and key) must be storable: no NUL, no lone surrogate."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            raise validation_error(loc, problem, "string_unstorable", value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            key_loc = (*loc, str(key))
            if isinstance(key, str):
                _check_texts(key, key_loc)
            _check_texts(item, key_loc)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_texts(item, (*loc, index))


def resolve_job_config(preset: str | None, overrides: Mapping[str, Any]) -> RunConfig:
    """treegrpo.config's validation, as 422s naming the field: loc ["body", "config", field]."""
    _check_texts(overrides, ("body", "config"))
    try:
        config = resolve_config(preset, overrides)
    except ConfigError as exc:
        # Every problem of the config at once, not only the first (config_errors re-checks
        # with each faulty setting put back to its default).
        errors = config_errors(preset, overrides) or [exc]
        raise RequestValidationError(
            [
                {
                    "loc": (
                        ("body", "preset")
                        if err.field == "preset"
                        else ("body", "config", err.field)
                    ),
                    "msg": err.reason,
                    "type": "config_error",
                    "input": None,
                }
                for err in errors
            ]
        ) from exc
    except (TypeError, ValueError, RecursionError) as exc:
        # The core's checks raise ConfigError; anything else is still the request's fault.
        raise validation_error(("body", "config"), str(exc), "config_error") from exc
    missing = missing_tracker_packages(config.trackers)
    if missing:
        # A tracker that cannot run is a clear 422 now, not a crash once the job has started.
        raise RequestValidationError(
            [
                {"loc": ("body", "config", err.field), "msg": err.reason, "type": "config_error"}
                for err in missing
            ]
        )
    try:
        json.dumps(config.to_dict(), allow_nan=False)
    except ValueError as exc:
        raise validation_error(
            ("body", "config"), "numbers must be finite (JSON has no NaN or Infinity)", "finite"
        ) from exc
    return config


def _parse_params(kind: str, params: Mapping[str, Any]) -> BaseModel:
    _check_texts(params, ("body", "params"))
    try:
        return parse_params(kind, dict(params))
    except ValidationError as exc:
        errors = []
        for error in exc.errors(include_url=False):
            item: dict[str, Any] = dict(error)
            item["loc"] = ("body", "params", *error["loc"])
            errors.append(item)
        raise RequestValidationError(errors) from exc


def _params_refer_to_rows(session: Session, params: dict[str, Any]) -> None:
    """The ids in params must name rows: a 422 now beats a failed job later."""
    source = params.get("source_job_id")
    if source is not None:
        try:
            crud.get_job(session, job_id=int(source))
        except NotFound as exc:
            raise validation_error(
                ("body", "params", "source_job_id"), f"no job {source}", "not_found", source
            ) from exc
    for index, model in enumerate(params.get("models") or []):
        job_id = model.get("job_id") if isinstance(model, dict) else None
        if job_id is None:
            continue
        try:
            crud.get_job(session, job_id=int(job_id))
        except NotFound as exc:
            loc = ("body", "params", "models", index, "job_id")
            raise validation_error(loc, f"no job {job_id}", "not_found", job_id) from exc
    branch = params.get("branch")
    if branch:
        _check_branch_node(session, branch=branch, loc=("body", "params", "branch"))


def _check_branch_node(session: Session, *, branch: dict[str, Any], loc: tuple[str, ...]) -> None:
    tree_id = int(branch["tree_id"])
    try:
        crud.get_tree(session, tree_id=tree_id)
    except NotFound as exc:
        raise validation_error((*loc, "tree_id"), f"no tree {tree_id}", "not_found") from exc
    field = "node_id" if branch.get("node_id") is not None else "branch_node_id"
    node_id = int(branch[field])
    try:
        node: Any
        if field == "node_id":
            node = crud.get_node(session, tree_id=tree_id, node_id=node_id)
        else:
            node = crud.get_branch_node(session, tree_id=tree_id, branch_node_id=node_id)
    except NotFound as exc:
        raise validation_error(
            (*loc, field),
            f"no {field[:-3].replace('_', ' ')} {node_id} in tree {tree_id}",
            "not_found",
        ) from exc
    if node.is_leaf:
        raise validation_error(
            (*loc, field),
            f"node {node_id} is a leaf: it has no denoising steps left to branch",
            "leaf_node",
        )


def record_branch(session: Session, *, job: Job) -> None:
    """The branch record of a new branch job, beside the tree (its nodes come later)."""
    branch = (job.params or {}).get("branch")
    if not branch:
        return
    crud.create_branch(
        session,
        job_id=job.id,
        tree_id=int(branch["tree_id"]),
        k=int(branch.get("k", 3)),
        node_id=branch.get("node_id"),
        from_branch_node_id=branch.get("branch_node_id"),
    )


def _progress_total(kind: str, config: RunConfig, params: dict[str, Any]) -> int:
    """What progress_step counts up to: epochs (train), trees (sample), 1 (evaluate, branch).
    The worker may refine it through its heartbeat."""
    if kind == "train":
        return config.epochs
    if kind == "sample":
        return 1 if params.get("branch") else int(params.get("trees", 1))
    return 1


def admit(
    session: Session, *, settings: Settings, config: RunConfig
) -> tuple[RunConfig, list[int]]:
    """What every config that comes through the API passes before a job is made of it (POST
    /jobs and each run of POST /experiments): the operator's lists (hosts, referable variables,
    secrets' hosts, file roots) and sizes, each broken rule a 422 naming its field; then dataset
    names become the content hash the worker will check, and rewards get their metadata checked.
    Returns the pinned config and the ids of the datasets it reads (crud.link_job)."""
    refuse_beyond_limits(session, settings=settings, config=config)
    return pin_datasets(session, config)


def create(
    session: Session,
    *,
    settings: Settings,
    body: JobCreate,
    idempotency_key: str | None,
    owner_key_id: int | None = None,
) -> tuple[Job, bool]:
    """Validate, insert, enqueue. Returns (job, created); created is False for a replay of an
    earlier request of the same key with the same Idempotency-Key and body."""
    config, dataset_ids = admit(
        session, settings=settings, config=resolve_job_config(body.preset, body.config)
    )
    params_model = _parse_params(body.kind, body.params)
    params = params_model.model_dump(mode="json", exclude_none=True)
    _params_refer_to_rows(session, params)
    job, created = crud.create_job(
        session,
        kind=body.kind,
        name=body.name if body.name is not None else (body.preset or body.kind),
        config=config.to_dict(),
        algorithm=config.algorithm,
        preset=body.preset,
        params=params,
        progress_total=_progress_total(body.kind, config, params),
        idempotency_key=idempotency_key,
        request_hash=request_hash(body) if idempotency_key is not None else None,
        **ownership(settings, owner_key_id),
    )
    if created:
        crud.link_job(session, job_id=job.id, dataset_ids=dataset_ids)
        record_branch(session, job=job)
        enqueue_or_fail(session, settings=settings, job=job)
    elif _never_sent(job):
        # The first attempt could not reach the broker: this retry sends the same job again.
        job = crud.request_resume(session, job_id=job.id)
        enqueue_or_fail(session, settings=settings, job=job)
    return job, created


def create_branch(
    session: Session,
    *,
    settings: Settings,
    tree_id: int,
    node_id: int | None = None,
    branch_node_id: int | None = None,
    body: BranchCreate,
    owner_key_id: int | None = None,
) -> Job:
    """A sample job that regrows `k` children from one stored tree node (or from a node an
    earlier branch grew), with the config of the job that logged the tree. Its branch record
    is made at once, beside the tree."""
    tree = crud.get_tree(session, tree_id=tree_id)
    node: Any
    if node_id is not None:
        node = crud.get_node(session, tree_id=tree_id, node_id=node_id)
        origin = {"node_id": node_id}
        default_name = f"branch of tree {tree_id} node {node_id}"
    else:
        assert branch_node_id is not None
        node = crud.get_branch_node(session, tree_id=tree_id, branch_node_id=branch_node_id)
        origin = {"branch_node_id": branch_node_id}
        default_name = f"branch of tree {tree_id} branch node {branch_node_id}"
    # A training node of a tree whose latents retention dropped; a branch node keeps its own.
    dropped = node_id is not None and tree.latents_dropped_at is not None
    refusal = node_branch_refusal(node, latents_dropped=dropped)
    if refusal is not None:
        raise ProblemError(409, f"node {node.id} {refusal}", kind="conflict")
    source = crud.get_job(session, job_id=tree.job_id)
    # The source's config passed the lists at its submit; they may have narrowed since.
    refuse_beyond_limits(session, settings=settings, config=RunConfig.from_dict(source.config))
    params = {"branch": {"tree_id": tree_id, **origin, "k": body.k}}
    parse_params("sample", params)  # the workers read params through the same models
    job, _ = crud.create_job(
        session,
        kind="sample",
        name=body.name if body.name is not None else default_name,
        config=source.config,
        algorithm=source.algorithm,
        preset=source.preset,
        params=params,
        parent_job_id=source.id,
        progress_total=1,
        **ownership(settings, owner_key_id),
    )
    record_branch(session, job=job)
    enqueue_or_fail(session, settings=settings, job=job)
    return job


def ownership(settings: Settings, owner_key_id: int | None) -> dict[str, Any]:
    """crud.create_job's owner arguments (access helper, issue 23): the submitting key owns the
    job, and the operator's per-key quota of queued jobs applies to it (0: none)."""
    return {"owner_key_id": owner_key_id, "max_queued": settings.max_queued_per_key or None}


def purge_or_log(job_id: int, *, settings: Settings) -> None:
    """Ask a worker to remove a deleted job's artifacts. A broker that is down only delays it:
    the row is deleted already, and `treegrpo purge` (or the next delete) can do it later."""
    try:
        queue.enqueue_purge(job_id, settings=settings)
    except Exception as exc:
        log.warning("job %s: deleted, but its purge was not sent: %s", job_id, exc)


def _never_sent(job: Job) -> bool:
    return (
        job.status == JobStatus.failed.value
        and job.attempt == 0
        and (job.error or "").startswith(ENQUEUE_FAILED)
    )


def enqueue_or_fail(session: Session, *, settings: Settings, job: Job) -> None:
    """Send the committed job to the workers; on failure mark it failed and answer 503."""
    try:
        queue.enqueue(job.id, job.kind, job.params or {}, settings=settings)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        log.warning("job %s: enqueue failed: %s", job.id, reason)
        crud.mark_enqueue_failed(
            session,
            job_id=job.id,
            error=f"{ENQUEUE_FAILED} ({reason}). Resume the job once the broker is back.",
        )
        raise ProblemError(
            503,
            f"job {job.id} was saved but the broker is unreachable ({reason}); the job is marked "
            "failed. Send the same request with the same Idempotency-Key, or POST "
            f"/api/v1/jobs/{job.id}/resume, once the broker is back.",
            kind="broker-unavailable",
            title="Broker unavailable",
            headers={"Retry-After": "5"},
            job_id=job.id,
        ) from exc
