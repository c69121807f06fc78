"""jobs.purged_at (a deleted run can be restored until its artifacts are purged) and
branches.policy (which policy grew a branch)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

A delete only sets `deleted_at`; the run stays restorable for the operator's grace period
(TREEGRPO_DELETE_GRACE_SECONDS), after which a worker's reconciler removes its artifacts and
sets `purged_at`. A purged run can no longer be restored. Runs deleted before this revision
were purged at once, so they are marked purged here.

`branches.policy` is what the branch job sampled with, set when it starts: {"job_id", "epoch",
"checkpoint": false for a base model, "tree_epoch": the epoch of the policy that grew the
training tree, "text"}. A tree whose policy was not checkpointed branches with the nearest
checkpoint (or the base model), and only the job log used to say so.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE jobs SET purged_at = deleted_at WHERE deleted_at IS NOT NULL")
    with op.batch_alter_table("branches") as batch:
        batch.add_column(sa.Column("policy", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("branches") as batch:
        batch.drop_column("policy")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("purged_at")
