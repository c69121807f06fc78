"""/trees: one whole logged tree, and branching again from any of its nodes."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from backend import crud
from backend.api import answers, files, submission
from backend.api.deps import DbDep, ReadKey, SettingsDep, StoreDep, WriteKey
from backend.api.problems import ProblemError, problem_responses
from backend.api.routes.jobs import audit, job_answer
from backend.atlases import Atlas, AtlasNode, AtlasSource, folder_of, load_atlas
from backend.schemas import (
    MAX_ID,
    AtlasIndex,
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
async def get_tree(
    tree_id: TreeId,
    request: Request,
    db: DbDep,
    _key: ReadKey,
    drawn: Annotated[
        bool,
        Query(
            description="Only the nodes a viewer draws (ODE-chain states left out; each "
            "node's parent_id is then its nearest drawn ancestor): 598 of 1,367 nodes for "
            "k=4, d=4."
        ),
    ] = False,
) -> Response:
    """With an ETag (a branch that adds nodes changes it); If-None-Match with it answers 304
    without reading a node (the ETag is over what the answer depends on: crud.tree_version)."""

    def work(session: Session) -> tuple[str, bytes | None]:
        version = (drawn, *crud.tree_version(session, tree_id=tree_id))
        digest = hashlib.blake2b(repr(version).encode(), digest_size=16).hexdigest()
        etag = f'"tree-{digest}"'
        if answers.not_modified(request, etag):
            return etag, None
        tree, nodes = crud.get_tree_rows(session, tree_id=tree_id)
        branches = crud.list_branches(session, tree_id=tree_id)
        public = tree_public(tree, branches, nodes=nodes, drawn=drawn)
        return etag, public.model_dump_json().encode()

    etag, body = await db.read(work)
    if body is None:
        return Response(status_code=304, headers={"ETag": etag})
    return answers.answer(request, body, etag=etag)


BranchQuery = Annotated[
    int | None,
    Query(ge=1, le=MAX_ID, description="A branch's id (GET /trees/{id} `branches[].id`)."),
]
# The image under `?v=<its ETag>` never changes (a different atlas has another ETag).
LONG_CACHE = "private, max-age=31536000, immutable"


def _atlas_source(session: Session, tree_id: int, branch_id: int | None) -> AtlasSource:
    if branch_id is None:
        artifact_dir, rows = crud.atlas_rows(session, tree_id=tree_id)
        index_of = {row[0]: row[1] for row in rows}
        nodes = [
            AtlasNode(
                id=node_id,
                node_index=node_index,
                parent_index=index_of.get(parent) if parent is not None else None,
                sde=bool(sde),
                image_path=image_path,
            )
            for node_id, node_index, parent, sde, image_path in rows
        ]
        return AtlasSource(folder=folder_of(nodes, artifact_dir), nodes=nodes)
    crud.tree_version(session, tree_id=tree_id)  # 404 for an unknown tree, without its nodes
    found = [b for b, _ in crud.list_branches(session, tree_id=tree_id) if b.id == branch_id]
    if not found:
        raise ProblemError(404, f"tree {tree_id} has no branch {branch_id}", kind="not-found")
    grown = list(found[0].nodes)
    by_id = {n.id: n.node_index for n in grown}
    nodes = [
        AtlasNode(
            id=n.id,
            node_index=n.node_index,
            parent_index=by_id.get(n.parent_id) if n.parent_id is not None else None,
            sde=n.log_prob_old is not None,
            image_path=n.image_path,
        )
        for n in grown
    ]
    # A branch's folder is the one above its images/; it tiles every node it grew.
    return AtlasSource(folder=folder_of(nodes, None), nodes=nodes, every=True)


async def _atlas(db: DbDep, store: StoreDep, tree_id: int, branch_id: int | None) -> Atlas:
    source = await db.read(_atlas_source, tree_id, branch_id)
    atlas = await run_in_threadpool(load_atlas, store, source)
    if atlas is None:
        raise ProblemError(404, f"tree {tree_id} has no node images", kind="not-found")
    return atlas


@router.get(
    "/{tree_id}/atlas",
    response_class=Response,
    responses={
        200: {
            "description": "The atlas (JPEG, or PNG for small greyscale images).",
            "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
        },
        **problem_responses(404),
    },
    summary="The tree's thumbnails as one image",
)
async def get_atlas(
    tree_id: TreeId,
    request: Request,
    db: DbDep,
    store: StoreDep,
    _key: ReadKey,
    branch: BranchQuery = None,
    v: Annotated[str | None, Query(max_length=80, description="The image's ETag.")] = None,
) -> Response:
    """The drawable nodes' thumbnails as tiles of one image (GET .../atlas/index places them);
    `branch` names a branch's own atlas. Written by the worker when it logged the tree; built
    once and stored for a tree logged before. With an ETag (If-None-Match: 304); under
    `?v=<ETag>` it may be cached for good."""
    atlas = await _atlas(db, store, tree_id, branch)
    etag = answers.etag_of(atlas.image)
    fixed = v is not None and v.strip('"') == etag.strip('"')
    headers = {
        **files.SAFE_HEADERS,
        "ETag": etag,
        "Cache-Control": LONG_CACHE if fixed else "private, no-cache",
    }
    condition = request.headers.get("if-none-match")
    if condition is not None and etag in [t.strip() for t in condition.split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(atlas.image, media_type=atlas.media_type, headers=headers)


@router.get(
    "/{tree_id}/atlas/index",
    response_model=AtlasIndex,
    responses=problem_responses(404),
    summary="Where each node's tile sits in the atlas",
)
async def get_atlas_index(
    tree_id: TreeId,
    request: Request,
    db: DbDep,
    store: StoreDep,
    _key: ReadKey,
    branch: BranchQuery = None,
) -> Response:
    """Tile size, columns, format, `slots` {node id: slot} (tile s at x = (s % columns) * tile,
    y = (s // columns) * tile) and `etag`, the image's ETag (GET .../atlas?v=<etag>)."""
    atlas = await _atlas(db, store, tree_id, branch)
    body = {**atlas.index, "etag": answers.etag_of(atlas.image).strip('"')}
    return answers.answer(request, answers.encode(body))


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
