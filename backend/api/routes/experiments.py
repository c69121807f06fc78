"""/experiments: grids of training runs with one set of statistics.

POST expands a base config and axes (treegrpo/config/grid.py) into train jobs, grouped and
named, every one validated before any is made. Each run carries the experiment's shared
held-out yardstick and budget in its params (backend/job_params.py ExperimentRunParams). GET
answers with the runs and the statistics (treegrpo/statistics.py) computed from their metrics.
Cancel, resume and delete act on every run at once.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from backend import crud
from backend.access import Caller, may_manage, require_role
from backend.api import nesting, submission
from backend.api.audit_trail import audit
from backend.api.deps import DbDep, ReadKey, SettingsDep, WriteKey
from backend.api.problems import ProblemError, problem_responses, validation_error
from backend.errors import Conflict, QuotaExceeded
from backend.experiment_schemas import (
    ExperimentBudget,
    ExperimentCreate,
    ExperimentEval,
    ExperimentPublic,
    ExperimentsPublic,
)
from backend.models import ACTIVE_STATUSES, RESUMABLE_STATUSES, Experiment, Job, KeyRole
from backend.settings import Settings
from treegrpo.config import ConfigError
from treegrpo.config.grid import EXPERIMENT_PRESETS, GridCell, expand_grid
from treegrpo.config.merge import deep_merge
from treegrpo.config.run import expand_dotted
from treegrpo.statistics import CLOCKS, HELDOUT, RunPoints, experiment_statistics

router = APIRouter(prefix="/experiments", tags=["experiments"])

ExperimentId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The experiment's id.")]
STAT_METRICS = [HELDOUT, *CLOCKS, "time/epoch_cpu", "time/epoch"]


def _request(body: ExperimentCreate) -> ExperimentCreate:
    """The body with an experiment preset's fields filled in where the body leaves them out."""
    if body.experiment_preset is None:
        return body
    preset = EXPERIMENT_PRESETS.get(body.experiment_preset)
    if preset is None:
        raise validation_error(
            ("body", "experiment_preset"),
            f"unknown experiment preset {body.experiment_preset!r}; "
            f"known: {', '.join(sorted(EXPERIMENT_PRESETS))}",
            "unknown_preset",
        )
    return body.model_copy(
        update={
            "name": body.name or body.experiment_preset,
            "preset": body.preset or preset["preset"],
            "config": deep_merge(preset.get("config", {}), body.config),
            "axes": body.axes or preset["axes"],
            "budget": body.budget or ExperimentBudget.model_validate(preset["budget"]),
        }
    )


def _cells(body: ExperimentCreate) -> list[GridCell]:
    try:
        return expand_grid(body.axes, base_preset=body.preset)
    except ConfigError as exc:
        raise validation_error(("body", *exc.field.split(".", 1)), exc.reason, "axes") from exc


def _overrides(body: ExperimentCreate, cell: GridCell, budget: ExperimentBudget) -> dict[str, Any]:
    overrides = deep_merge(expand_dotted(body.config), expand_dotted(cell.overrides))
    if budget.epochs is not None:
        overrides = deep_merge(overrides, {"epochs": budget.epochs})
    return overrides


def _create(
    session: Session, settings: Settings, caller: Caller, body: ExperimentCreate
) -> Experiment:
    body = _request(body)
    if body.budget is None:
        raise validation_error(("body", "budget"), "an experiment needs a budget", "missing")
    budget = body.budget
    evaluation = body.eval or ExperimentEval()
    cells = _cells(body)
    configs = []
    for cell in cells:  # every run is validated before any is made
        try:
            overrides = _overrides(body, cell, budget)
        except ConfigError as exc:
            loc = ("body", "runs", cell.name, "config", exc.field)
            raise validation_error(loc, exc.reason, "config_error") from exc
        try:
            config = submission.resolve_job_config(cell.preset, overrides)
            configs.append(submission.admit(session, settings=settings, config=config))
        except RequestValidationError as exc:
            errors = [
                {**error, "loc": ("body", "runs", cell.name, *error["loc"][1:])}
                for error in exc.errors()
            ]
            raise RequestValidationError(errors) from exc
    quota = settings.max_queued_per_key
    if quota and caller.key_id is not None:  # all runs or none: never half a grid
        queued = crud.queued_count(session, owner_key_id=caller.key_id)
        if queued + len(cells) > quota:
            raise QuotaExceeded(
                f"this experiment has {len(cells)} runs and key {caller.name!r} already has "
                f"{queued} jobs queued; the operator allows {quota}",
                limit=quota,
            )
    experiment = crud.create_experiment(
        session,
        name=body.name or ", ".join(body.axes),
        preset=body.preset,
        config=body.config,
        axes=body.axes,
        budget=budget.model_dump(exclude_none=True),
        evaluation={**evaluation.model_dump(), "reference_group": body.reference_group},
        owner_key_id=caller.key_id,
    )
    for cell, (config, dataset_ids) in zip(cells, configs, strict=True):
        for_run = {
            "experiment_id": experiment.id,
            "group": cell.group,
            "eval_count": evaluation.count,
            "eval_noise_seed": evaluation.noise_seed,
            "eval_every": evaluation.every,
            "budget_seconds": budget.seconds,
        }
        job, _ = crud.create_job(
            session,
            kind="train",
            name=f"{experiment.name}: {cell.name}",
            config=config.to_dict(),
            algorithm=config.algorithm,
            preset=cell.preset,
            params={"experiment": {k: v for k, v in for_run.items() if v is not None}},
            progress_total=config.epochs,
            experiment_id=experiment.id,
            experiment_group=cell.group,
            **submission.ownership(settings, caller.key_id),
        )
        crud.link_job(session, job_id=job.id, dataset_ids=dataset_ids)
        submission.enqueue_or_fail(session, settings=settings, job=job)
    audit(
        session, caller, "experiment.create", "experiment", experiment.id,
        runs=len(cells), preset=body.preset, axes=sorted(body.axes),
    )  # fmt: skip
    return experiment


def _runs(session: Session, experiment: Experiment) -> list[Job]:
    return crud.experiment_jobs(session, experiment_id=experiment.id)


def _public(
    session: Session, experiment: Experiment, with_statistics: bool = False
) -> ExperimentPublic:
    jobs = _runs(session, experiment)
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    runs = [
        {
            "job_id": job.id,
            "name": job.name,
            "group": job.experiment_group,
            "seed": (job.config or {}).get("seed"),
            "status": job.status,
            "progress_step": job.progress_step,
            "progress_total": job.progress_total,
        }
        for job in jobs
    ]
    statistics = None
    if with_statistics:
        series = crud.metric_series(session, job_ids=[j.id for j in jobs], names=STAT_METRICS)
        points = [
            RunPoints(
                name=job.name,
                group=job.experiment_group or job.name,
                seed=(job.config or {}).get("seed"),
                status=job.status,
                points=series[job.id],
            )
            for job in jobs
        ]
        seconds = (experiment.budget or {}).get("seconds")
        statistics = experiment_statistics(
            points,
            reference_group=(experiment.evaluation or {}).get("reference_group"),
            # A run that missed a level within a wall-clock budget counts at the budget (it
            # stopped before an epoch would overrun it), as bench/reproduce.py counts CPU ones.
            budgets={"wall_clock": float(seconds)} if seconds else None,
        )
    return ExperimentPublic.model_validate(
        {
            "id": experiment.id,
            "name": experiment.name,
            "preset": experiment.preset,
            "config": experiment.config,
            "axes": experiment.axes,
            "budget": experiment.budget,
            "evaluation": experiment.evaluation,
            "created_at": experiment.created_at.isoformat(),
            "status_counts": counts,
            "runs": runs,
            "statistics": statistics,
        }
    )


def _managed(session: Session, caller: Caller, experiment_id: int, action: str) -> Experiment:
    experiment = crud.get_experiment(session, experiment_id=experiment_id)
    require_role(caller, KeyRole.member, action)
    if not may_manage(caller, experiment.owner_key_id):
        raise ProblemError(
            403,
            f"{action} experiment {experiment_id} needs the admin role: a member manages only "
            "the experiments its own key made",
            kind="forbidden",
        )
    return experiment


@router.post(
    "",
    status_code=201,
    response_model=ExperimentPublic,
    responses=problem_responses(401, 403, 429, 503),
    summary="Create an experiment: a grid of train jobs",
)
async def create_experiment(
    body: ExperimentCreate, db: DbDep, settings: SettingsDep, caller: WriteKey
) -> ExperimentPublic:
    """One train job per combination of the axes' values, named `<experiment>: <group>
    seed=<s>`. A bad value in any run is a 422 whose loc is ["body", "runs", run, "config",
    field], and nothing is made."""
    nesting.check_experiment_request(body)

    def work(session: Session) -> ExperimentPublic:
        experiment = _create(session, settings, caller, body)
        return _public(session, experiment)

    return await db.run(work)


@router.get("/presets", summary="Named experiments")
async def experiment_presets(_key: ReadKey) -> dict[str, Any]:
    return {"data": EXPERIMENT_PRESETS}


@router.get("", response_model=ExperimentsPublic, summary="List experiments, newest first")
async def list_experiments(
    db: DbDep,
    _key: ReadKey,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> ExperimentsPublic:
    def work(session: Session) -> ExperimentsPublic:
        rows, count = crud.list_experiments(session, limit=limit, offset=offset)
        return ExperimentsPublic(data=[_public(session, row) for row in rows], count=count)

    return await db.read(work)


@router.get(
    "/{experiment_id}",
    response_model=ExperimentPublic,
    responses=problem_responses(404),
    summary="One experiment with its runs and statistics",
)
async def get_experiment(experiment_id: ExperimentId, db: DbDep, _key: ReadKey) -> ExperimentPublic:
    """Statistics (treegrpo/statistics.py experiment_statistics): per group the median and
    range over seeds of the final held-out reward, seconds per iteration (CPU and wall) and
    time to each target level; reward bands against CPU seconds, wall-clock and images seen;
    paired ratios with bootstrap intervals; the Pareto front."""

    def work(session: Session) -> ExperimentPublic:
        experiment = crud.get_experiment(session, experiment_id=experiment_id)
        return _public(session, experiment, with_statistics=True)

    return await db.read(work)


@router.post(
    "/{experiment_id}/cancel",
    response_model=ExperimentPublic,
    responses=problem_responses(401, 403, 404),
    summary="Stop every run that is queued or running",
)
async def cancel_experiment(
    experiment_id: ExperimentId, db: DbDep, caller: WriteKey
) -> ExperimentPublic:
    def work(session: Session) -> ExperimentPublic:
        experiment = _managed(session, caller, experiment_id, "cancelling")
        for job in _runs(session, experiment):
            if job.status in {s.value for s in ACTIVE_STATUSES}:
                with contextlib.suppress(Conflict):  # it finished meanwhile
                    crud.request_cancel(session, job_id=job.id)
        audit(session, caller, "experiment.cancel", "experiment", experiment_id)
        return _public(session, experiment)

    return await db.run(work)


@router.post(
    "/{experiment_id}/resume",
    response_model=ExperimentPublic,
    responses=problem_responses(401, 403, 404, 503),
    summary="Queue every stopped run again",
)
async def resume_experiment(
    experiment_id: ExperimentId, db: DbDep, settings: SettingsDep, caller: WriteKey
) -> ExperimentPublic:
    """Interrupted, failed, cancelled and lost runs continue from their checkpoints."""

    def work(session: Session) -> ExperimentPublic:
        experiment = _managed(session, caller, experiment_id, "resuming")
        for job in _runs(session, experiment):
            if job.status in {s.value for s in RESUMABLE_STATUSES}:
                resumed = crud.request_resume(session, job_id=job.id)
                submission.enqueue_or_fail(session, settings=settings, job=resumed)
        audit(session, caller, "experiment.resume", "experiment", experiment_id)
        return _public(session, experiment)

    return await db.run(work)


@router.delete(
    "/{experiment_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 409),
    summary="Delete an experiment and its runs",
)
async def delete_experiment(
    experiment_id: ExperimentId, db: DbDep, settings: SettingsDep, caller: WriteKey
) -> Response:
    """A 409 while any run is queued or running (cancel the experiment first)."""

    def work(session: Session) -> None:
        _managed(session, caller, experiment_id, "deleting")
        deleted = crud.soft_delete_experiment(session, experiment_id=experiment_id)
        audit(session, caller, "experiment.delete", "experiment", experiment_id, runs=deleted)
        for job_id in deleted:
            submission.purge_or_log(job_id, settings=settings)

    await db.run(work)
    return Response(status_code=204)
