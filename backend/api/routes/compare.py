"""/compare/gallery: two or more runs' held-out galleries side by side at one epoch; /queues:
what waits and runs in each lane."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from backend import crud
from backend.api.deps import DbDep, ReadKey
from backend.api.problems import problem_responses
from backend.schemas import (
    MAX_ID,
    MAX_INT,
    CompareGalleryPublic,
    QueuesPublic,
    artifact_url,
)

router = APIRouter(tags=["compare"])

MAX_RUNS = 8


@router.get(
    "/compare/gallery",
    response_model=CompareGalleryPublic,
    responses=problem_responses(404),
    summary="Held-out galleries of several runs at one epoch",
)
async def compare_gallery(
    db: DbDep,
    _key: ReadKey,
    job_id: Annotated[
        list[Annotated[int, Query(ge=1, le=MAX_ID)]],
        Query(min_length=2, max_length=MAX_RUNS, description="2..8 job ids."),
    ],
    epoch: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_INT,
            description="Each run shows its last gallery at or before this epoch; default: "
            "the last epoch every run has, else each run's latest.",
        ),
    ] = None,
) -> CompareGalleryPublic:
    """Galleries are ODE samples of the evaluation prompts from fixed noise (seeded by the run's
    seed), so runs with equal seeds and prompts differ only by their policy (`same_noise`)."""
    ids = list(dict.fromkeys(job_id))

    def work(session: Session) -> CompareGalleryPublic:
        jobs = [crud.get_job(session, job_id=one) for one in ids]
        epochs = {job.id: crud.sample_epochs(session, job_id=job.id) for job in jobs}
        wanted = epoch
        if wanted is None:
            common = set.intersection(*(set(found) for found in epochs.values()))
            wanted = max(common) if common else None
        runs: list[dict[str, Any]] = []
        for job in jobs:
            available = epochs[job.id]
            if wanted is None:
                shown = max(available) if available else None
            else:
                earlier = [e for e in available if e <= wanted]
                shown = max(earlier) if earlier else None
            items = []
            if shown is not None:
                rows, _ = crud.list_samples(session, job_id=job.id, epoch=shown, limit=500)
                items = [
                    {
                        "index": row.index,
                        "prompt": row.prompt,
                        "reward": row.reward,
                        "image_url": artifact_url(row.image_path) or "",
                    }
                    for row in rows
                ]
            seed = (job.config or {}).get("seed")
            runs.append(
                {
                    "job_id": job.id,
                    "name": job.name,
                    "algorithm": job.algorithm,
                    "seed": seed if isinstance(seed, int) else None,
                    "epoch": shown,
                    "epochs": available,
                    "items": items,
                }
            )
        prompt_lists = [[item["prompt"] for item in run["items"]] for run in runs]
        same = (
            len({run["seed"] for run in runs}) == 1
            and all(prompts == prompt_lists[0] for prompts in prompt_lists)
            and bool(prompt_lists[0])
        )
        return CompareGalleryPublic.model_validate(
            {"epoch": wanted, "same_noise": same, "prompts": prompt_lists[0], "runs": runs}
        )

    return await db.run(work)


@router.get("/queues", response_model=QueuesPublic, summary="Jobs waiting and running per lane")
async def queues(db: DbDep, _key: ReadKey) -> QueuesPublic:
    return await db.run(lambda session: QueuesPublic.model_validate(crud.lane_counts(session)))
