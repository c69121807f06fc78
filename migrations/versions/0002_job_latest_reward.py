"""the latest reward kept on the job row

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Reads of jobs (one, or a page of 50) used a correlated lookup of the last reward_mean point per
job; the row now carries it, kept by crud.upsert_metrics. Existing jobs are filled in here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# The last reward_mean point of each job; plain SQL that PostgreSQL and SQLite both run.
_BACKFILL = """
UPDATE jobs SET
    latest_reward_step = (
        SELECT max(m.step) FROM metrics m WHERE m.job_id = jobs.id AND m.name = 'reward_mean'
    ),
    latest_reward = (
        SELECT m.value FROM metrics m WHERE m.job_id = jobs.id AND m.name = 'reward_mean'
        ORDER BY m.step DESC LIMIT 1
    )
"""


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("latest_reward", sa.Float(), nullable=True))
        batch.add_column(sa.Column("latest_reward_step", sa.Integer(), nullable=True))
    op.execute(_BACKFILL)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("latest_reward_step")
        batch.drop_column("latest_reward")
