"""dataset_imports: a running import's progress, readable from every API process

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

GET /datasets/imports/{progress_id} answered from the memory of the API process that ran the
import, so behind several API processes a poll that reached another one got a 404. The progress
now lives in this table while the import runs (backend/import_progress.py); nothing to migrate.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dataset_imports",
        sa.Column("progress_id", sa.String(64), primary_key=True),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("done", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dataset_imports")
