"""/trees: one whole logged tree, and branching again from any of its nodes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from sqlalchemy.orm import Session

from backend import crud
from backend.api import answers, submission
from backend.api.deps import DbDep, ReadKey, SettingsDep, WriteKey
from backend.api.problems import problem_responses
from backend.schemas import MAX_ID, BranchCreate, JobPublic, TreePublic, job_public, tree_public

router = APIRouter(prefix="/trees", tags=["trees"])

TreeId = Annotated[int, Path(ge=1, le=MAX_ID, description="The tree's id.")]
NodeId = Annotated[int, Path(ge=1, le=MAX_ID, description="A tree_nodes id of that tree.")]


@router.get(
    "/{tree_id}",
    response_model=TreePublic,
    responses=problem_responses(404),
    summary="A whole tree with its nodes",
)
async def get_tree(tree_id: TreeId, request: Request, db: DbDep, _key: ReadKey) -> Response:
    """With an ETag (a branch that adds nodes changes it); If-None-Match with it answers 304."""

    def work(session: Session) -> bytes:
        return tree_public(crud.get_tree(session, tree_id=tree_id)).model_dump_json().encode()

    return answers.answer(request, await db.read(work))


@router.post(
    "/{tree_id}/nodes/{node_id}/branch",
    status_code=201,
    response_model=JobPublic,
    responses=problem_responses(401, 404, 409, 503),
    summary="Regrow k children from a node",
)
async def branch(
    tree_id: TreeId,
    node_id: NodeId,
    db: DbDep,
    settings: SettingsDep,
    _key: WriteKey,
    body: BranchCreate | None = None,
) -> JobPublic:
    """Creates a `sample` job with params {"branch": {tree_id, node_id, k}} and the config of the
    job that logged the tree. Its children appear in GET /trees/{id} with branch_job_id set.
    A leaf has no steps left to branch: 409."""
    job = await db.run(
        submission.create_branch,
        settings=settings,
        tree_id=tree_id,
        node_id=node_id,
        body=body or BranchCreate(),
    )
    return job_public(job)
