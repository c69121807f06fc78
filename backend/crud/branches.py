"""Tree nodes grown by branch jobs (workers)."""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session

from backend.models import TreeNode


def delete_branch_nodes(session: Session, *, tree_id: int, branch_job_id: int) -> int:
    """Drop the nodes one branch job grew in a tree (before the job writes them again).
    Children of those nodes go with them (ON DELETE CASCADE). Does not commit."""
    result = session.execute(
        delete(TreeNode).where(TreeNode.tree_id == tree_id, TreeNode.branch_job_id == branch_job_id)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
