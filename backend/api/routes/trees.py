"""/trees: one whole logged tree, and branching again from any of its nodes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from sqlalchemy.orm import Session

from backend import crud
from backend.api import answers, submission
from backend.api.deps import DbDep, ReadKey, SettingsDep, WriteKey
from backend.api.problems import problem_responses
from backend.api.routes.jobs import audit, job_answer
from backend.schemas import (
    MAX_ID,
    BranchCreate,
    BranchesPublic,
    JobPublic,
    TreePublic,
    branch_public,
    tree_public,
)

router = APIRouter(prefix="/trees", tags=["trees"])

TreeId = Annotated[int, Path(ge=1, le=MAX_ID, description="The tree's id.")]
NodeId = Annotated[int, Path(ge=1, le=MAX_ID, description="A tree_nodes id of that tree.")]
BranchNodeId = Annotated[
    int, Path(ge=1, le=MAX_ID, description="A branch_nodes id of a branch of that tree.")
]


@router.get(
    "/{tree_id}",
    response_model=TreePublic,
    responses=problem_responses(404),
    summary="A whole tree with its nodes",
)
async def get_tree(tree_id: TreeId, request: Request, db: DbDep, _key: ReadKey) -> Response:
    """With an ETag (a branch that adds nodes changes it); If-None-Match with it answers 304."""

    def work(session: Session) -> bytes:
        tree = crud.get_tree(session, tree_id=tree_id)
        branches = crud.list_branches(session, tree_id=tree_id)
        return tree_public(tree, branches).model_dump_json().encode()

    return answers.answer(request, await db.read(work))


@router.get(
    "/{tree_id}/branches",
    response_model=BranchesPublic,
    responses=problem_responses(404),
    summary="Branch results beside a tree",
)
async def get_branches(tree_id: TreeId, request: Request, db: DbDep, _key: ReadKey) -> Response:
    """Each branch job's record, oldest first, with its nodes once the job is done."""

    def work(session: Session) -> bytes:
        crud.get_tree(session, tree_id=tree_id)
        items = [
            branch_public(b, status) for b, status in crud.list_branches(session, tree_id=tree_id)
        ]
        return BranchesPublic(data=items, count=len(items)).model_dump_json().encode()

    return answers.answer(request, await db.read(work))


@router.post(
    "/{tree_id}/nodes/{node_id}/branch",
    status_code=201,
    response_model=JobPublic,
    responses=problem_responses(401, 403, 404, 409, 429, 503),
    summary="Regrow k children from a node",
)
async def branch(
    tree_id: TreeId,
    node_id: NodeId,
    db: DbDep,
    settings: SettingsDep,
    caller: WriteKey,
    body: BranchCreate | None = None,
) -> JobPublic:
    """Creates a `sample` job (interactive lane) with params {"branch": {tree_id, node_id, k}}
    and the config of the job that logged the tree. Its record appears at once in GET
    /trees/{id} `branches` (the training tree itself never changes); its nodes when it is done.
    A leaf has no steps left to branch: 409. Any member may branch any tree: the branch is a
    new job of its own."""

    def work(session: Session) -> JobPublic:
        job = submission.create_branch(
            session,
            settings=settings,
            tree_id=tree_id,
            node_id=node_id,
            body=body or BranchCreate(),
            owner_key_id=caller.key_id,
        )
        audit(session, caller, "job.branch", job.id, tree_id=tree_id, node_id=node_id)
        return job_answer(session, job)

    return await db.run(work)


@router.post(
    "/{tree_id}/branch-nodes/{branch_node_id}/branch",
    status_code=201,
    response_model=JobPublic,
    responses=problem_responses(401, 403, 404, 409, 429, 503),
    summary="Regrow k children from a node a branch grew",
)
async def branch_again(
    tree_id: TreeId,
    branch_node_id: BranchNodeId,
    db: DbDep,
    settings: SettingsDep,
    caller: WriteKey,
    body: BranchCreate | None = None,
) -> JobPublic:
    """As POST /trees/{id}/nodes/{node_id}/branch, from a branch node (GET /trees/{id}
    `branches[].nodes[].id`)."""

    def work(session: Session) -> JobPublic:
        job = submission.create_branch(
            session,
            settings=settings,
            tree_id=tree_id,
            branch_node_id=branch_node_id,
            body=body or BranchCreate(),
            owner_key_id=caller.key_id,
        )
        audit(session, caller, "job.branch", job.id, tree_id=tree_id, branch_node_id=branch_node_id)
        return job_answer(session, job)

    return await db.run(work)
