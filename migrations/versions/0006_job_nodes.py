"""job_nodes: the machines of a multi-node attempt (who claimed which node, where, heartbeats)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

One row per node and attempt. Node 0 (the worker that claimed the job) inserts every row of its
attempt; the other workers claim the open ones with a conditional UPDATE. Nothing existing
changes: jobs with nodes = 1 never write here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_nodes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("node_rank", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("host", sa.String(200), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("job_id", "attempt", "node_rank", name="uq_job_nodes_attempt_rank"),
    )
    op.create_index("ix_job_nodes_job_attempt", "job_nodes", ["job_id", "attempt"])


def downgrade() -> None:
    op.drop_index("ix_job_nodes_job_attempt", table_name="job_nodes")
    op.drop_table("job_nodes")
