"""Branch results, beside the training tree they grew from (never inside it).

A branch row is made when the branch job is submitted; its nodes arrive when the job is done
(a job that runs again replaces them). The training tree's nodes, rewards and summary are never
touched. A branch grows from a training node (`node_id`) or from a node another branch grew
(`from_branch_node_id`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, selectinload

from backend.crud.trees import NODE_FIELDS
from backend.errors import NotFound
from backend.models import Branch, BranchNode, Job


def create_branch(
    session: Session,
    *,
    job_id: int,
    tree_id: int,
    k: int,
    node_id: int | None = None,
    from_branch_node_id: int | None = None,
) -> Branch:
    """The record of a branch job (no nodes yet). Commits."""
    if (node_id is None) == (from_branch_node_id is None):
        raise ValueError("a branch grows from exactly one of node_id, from_branch_node_id")
    branch = Branch(
        job_id=job_id,
        tree_id=tree_id,
        node_id=node_id,
        from_branch_node_id=from_branch_node_id,
        k=k,
    )
    session.add(branch)
    session.commit()
    return branch


def branch_of_job(session: Session, *, job_id: int) -> Branch | None:
    return session.scalar(select(Branch).where(Branch.job_id == job_id))


def get_branch_node(session: Session, *, tree_id: int, branch_node_id: int) -> BranchNode:
    node = session.get(BranchNode, branch_node_id)
    if node is None or node.branch.tree_id != tree_id:
        raise NotFound("branch node", branch_node_id)
    return node


def replace_branch_nodes(
    session: Session, *, branch_id: int, nodes: Sequence[dict[str, Any]]
) -> list[BranchNode]:
    """The branch's nodes (each: node_index, parent_index and crud.trees.NODE_FIELDS, as a tree node; parent_index
    None = a child of the origin), replacing any it had. Parents come before children.
    Commits."""
    session.execute(delete(BranchNode).where(BranchNode.branch_id == branch_id))
    known: dict[int, int] = {}
    created: list[BranchNode] = []
    for node in sorted(nodes, key=lambda n: int(n["node_index"])):
        parent = node.get("parent_index")
        if parent is not None and int(parent) not in known:
            raise ValueError(f"node {node['node_index']} names parent {parent}, not before it")
        row = BranchNode(
            branch_id=branch_id,
            node_index=int(node["node_index"]),
            parent_id=None if parent is None else known[int(parent)],
            **{name: node.get(name) for name in NODE_FIELDS if name in node},
        )
        session.add(row)
        session.flush()
        known[row.node_index] = row.id
        created.append(row)
    session.commit()
    return created


def list_branches(session: Session, *, tree_id: int) -> list[tuple[Branch, str]]:
    """The tree's branches, oldest first, each with its job's status (deleted jobs' left out)."""
    rows = session.execute(
        select(Branch, Job.status)
        .join(Job, Job.id == Branch.job_id)
        .where(Branch.tree_id == tree_id, Job.deleted_at.is_(None))
        .options(selectinload(Branch.nodes))
        .order_by(Branch.id)
    ).all()
    return [(row[0], str(row[1])) for row in rows]


def set_branch_policy(session: Session, *, branch_id: int, policy: dict[str, Any]) -> None:
    """Record which policy a branch job samples with (see Branch.policy). Commits."""
    branch = session.get(Branch, branch_id)
    if branch is not None:
        branch.policy = dict(policy)
        session.commit()
