"""branches beside the training tree; tags, notes and soft delete of jobs

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-03

Branch jobs used to append their nodes to the training tree (tree_nodes.branch_job_id), so the
tree's summary counted exploratory children as if training had grown them. Branch results are
now their own rows (branches, branch_nodes); the nodes branch jobs added are moved there, which
gives trees already branched their training summaries back. tree_nodes.branch_job_id stays (no
table rebuild on SQLite) and is null from here on.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_NODE_COLUMNS = (
    "depth",
    "step_index",
    "t",
    "sigma",
    "is_leaf",
    "log_prob_old",
    "reward",
    "rewards",
    "advantage",
    "image_path",
    "latent_path",
)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("notes", sa.Text(), nullable=True))
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE jobs SET tags = '[]', notes = ''")
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("tags", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("notes", existing_type=sa.Text(), nullable=False)
    op.create_table(
        "branches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("tree_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("from_branch_node_id", sa.Integer(), nullable=True),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["node_id"], ["tree_nodes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tree_id"], ["trees.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id"),
    )
    with op.batch_alter_table("branches") as batch:
        batch.create_index(batch.f("ix_branches_tree_id"), ["tree_id"], unique=False)
    op.create_table(
        "branch_nodes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("branch_id", sa.Integer(), nullable=False),
        sa.Column("node_index", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("t", sa.Float(), nullable=False),
        sa.Column("sigma", sa.Float(), nullable=False),
        sa.Column("is_leaf", sa.Boolean(), nullable=False),
        sa.Column("log_prob_old", sa.Float(), nullable=True),
        sa.Column("reward", sa.Float(), nullable=True),
        sa.Column("rewards", sa.JSON(), nullable=True),
        sa.Column("advantage", sa.Float(), nullable=True),
        sa.Column("image_path", sa.String(length=1024), nullable=True),
        sa.Column("latent_path", sa.String(length=1024), nullable=True),
        sa.ForeignKeyConstraint(["branch_id"], ["branches.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["parent_id"], ["branch_nodes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("branch_id", "node_index", name="uq_branch_nodes_branch_index"),
    )
    with op.batch_alter_table("branch_nodes") as batch:
        batch.create_index(batch.f("ix_branch_nodes_branch_id"), ["branch_id"], unique=False)
    _move_branch_nodes(op.get_bind())


def _move_branch_nodes(bind: sa.engine.Connection) -> None:
    """Every tree node a branch job added becomes a branch_nodes row of that job's branch, and
    leaves tree_nodes. A branch grown from another branch's node points at its new row."""
    meta = sa.MetaData()
    nodes = sa.Table("tree_nodes", meta, autoload_with=bind)
    jobs = sa.Table("jobs", meta, autoload_with=bind)
    branches = sa.Table("branches", meta, autoload_with=bind)
    branch_nodes = sa.Table("branch_nodes", meta, autoload_with=bind)
    rows = bind.execute(
        sa.select(nodes).where(nodes.c.branch_job_id.is_not(None)).order_by(nodes.c.id)
    ).mappings()
    by_job: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_job.setdefault(int(row["branch_job_id"]), []).append(dict(row))
    moved: dict[int, int] = {}  # tree_nodes id -> branch_nodes id
    for job_id in sorted(by_job, key=lambda job: by_job[job][0]["id"]):
        group = by_job[job_id]
        ids = {node["id"] for node in group}
        origin = next(node["parent_id"] for node in group if node["parent_id"] not in ids)
        created = bind.execute(sa.select(jobs.c.created_at).where(jobs.c.id == job_id)).scalar()
        branch_id = bind.execute(
            sa.insert(branches)
            .values(
                job_id=job_id,
                tree_id=group[0]["tree_id"],
                node_id=None if origin in moved else origin,
                from_branch_node_id=moved.get(origin),
                k=sum(1 for node in group if node["parent_id"] == origin),
                created_at=created,
            )
            .returning(branches.c.id)
        ).scalar_one()
        first = min(node["node_index"] for node in group)
        for node in group:  # ids ascend: parents before children
            parent = node["parent_id"]
            new_id = bind.execute(
                sa.insert(branch_nodes)
                .values(
                    branch_id=branch_id,
                    node_index=node["node_index"] - first,
                    parent_id=None if parent == origin else moved[parent],
                    **{name: node[name] for name in _NODE_COLUMNS},
                )
                .returning(branch_nodes.c.id)
            ).scalar_one()
            moved[node["id"]] = new_id
    if moved:
        # Children first is not needed: ON DELETE CASCADE is not relied on (SQLite may run
        # without foreign keys); every moved row is named.
        bind.execute(sa.delete(nodes).where(nodes.c.branch_job_id.is_not(None)))


def downgrade() -> None:
    with op.batch_alter_table("branch_nodes") as batch:
        batch.drop_index(batch.f("ix_branch_nodes_branch_id"))
    op.drop_table("branch_nodes")
    with op.batch_alter_table("branches") as batch:
        batch.drop_index(batch.f("ix_branches_tree_id"))
    op.drop_table("branches")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("deleted_at")
        batch.drop_column("notes")
        batch.drop_column("tags")
