"""experiments: grids of training runs; jobs.experiment_id and jobs.experiment_group

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

An experiment row keeps the request (base preset and overrides, axes, budget, the shared
held-out evaluation); each run is a job pointing at it with its group (the run's name without
its seed). Existing jobs belong to no experiment. (0007 is another branch's number; the chain
is re-linked when both land.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("preset", sa.String(200), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("axes", sa.JSON(), nullable=False),
        sa.Column("budget", sa.JSON(), nullable=False),
        sa.Column("evaluation", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "owner_key_id",
            sa.Integer(),
            sa.ForeignKey("api_keys.id", ondelete="SET NULL", name="fk_experiments_owner_key_id"),
            nullable=True,
        ),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("experiment_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("experiment_group", sa.String(200), nullable=True))
        batch.create_foreign_key(
            "fk_jobs_experiment_id", "experiments", ["experiment_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index(batch.f("ix_jobs_experiment_id"), ["experiment_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(batch.f("ix_jobs_experiment_id"))
        batch.drop_constraint("fk_jobs_experiment_id", type_="foreignkey")
        batch.drop_column("experiment_group")
        batch.drop_column("experiment_id")
    op.drop_table("experiments")
