"""datasets: imported prompt dataset versions, and which jobs read them

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

A dataset row is written after its files are whole in the artifact store (datasets/<sha256>/),
so a listed dataset is never half imported. job_datasets links a job to the versions its config
pinned at submit; a dataset with links cannot be deleted. Nothing existing changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("splits", sa.JSON(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("source", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "owner_key_id",
            sa.Integer(),
            sa.ForeignKey("api_keys.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.UniqueConstraint("name", "sha256", name="uq_datasets_name_sha256"),
    )
    op.create_index("ix_datasets_name", "datasets", ["name"])
    op.create_index("ix_datasets_sha256", "datasets", ["sha256"])
    op.create_table(
        "job_datasets",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "job_id", sa.Integer(), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "dataset_id",
            sa.Integer(),
            sa.ForeignKey("datasets.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.UniqueConstraint("job_id", "dataset_id", name="uq_job_datasets"),
    )
    op.create_index("ix_job_datasets_job_id", "job_datasets", ["job_id"])
    op.create_index("ix_job_datasets_dataset_id", "job_datasets", ["dataset_id"])


def downgrade() -> None:
    op.drop_index("ix_job_datasets_dataset_id", table_name="job_datasets")
    op.drop_index("ix_job_datasets_job_id", table_name="job_datasets")
    op.drop_table("job_datasets")
    op.drop_index("ix_datasets_sha256", table_name="datasets")
    op.drop_index("ix_datasets_name", table_name="datasets")
    op.drop_table("datasets")
