"""trees.latents_dropped_at: when retention deleted a tree's latents

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

Workers keep a node's latent only where "branch again" can start, and the operator may keep
them for each job's newest trees only (TREEGRPO_KEEP_TREE_LATENTS). When a worker drops an
older tree's latents it nulls its nodes' `latent_path` and sets this column, so the API and
the inspector can say why such a tree can no longer be branched (retention, not "only branch
points keep a latent"). Existing trees kept their latents: null.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trees") as batch:
        batch.add_column(sa.Column("latents_dropped_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trees") as batch:
        batch.drop_column("latents_dropped_at")
