"""roles on API keys, job owners, per-key idempotency, the audit log, secret hosts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

Upgrade notes (README "Upgrading to roles"):
- api_keys.role ('admin' | 'member' | 'viewer'). EVERY EXISTING KEY BECOMES ADMIN: before this
  revision any key could do everything, so no script or dashboard that holds one breaks. An
  operator narrows them afterwards (`treegrpo api-key create NAME --role member`, then revoke
  the old key).
- jobs.owner_key_id: the key that submitted the job (null for jobs made before this revision,
  which only admins may then manage).
- The Idempotency-Key is unique per submitting key, (owner_key_id, idempotency_key), no longer
  across all keys.
- audit_log: one row per mutation (who, what, when).
- secrets.hosts: where a stored secret may be sent. Existing secrets get [] and go nowhere until
  an admin names their hosts (`treegrpo secret set NAME --host H`): sending a value to a host
  nobody chose is what this revision exists to stop.

Downgrade drops all of it; where two keys had used the same Idempotency-Key, only the oldest job
keeps it (the old constraint is global).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# SQLite leaves 0001's UNIQUE (idempotency_key) unnamed; batch mode names it by this convention
# when it copies the table, so that it can be dropped by name (PostgreSQL named it itself).
_UNNAMED_UNIQUE = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("role", sa.String(length=16), nullable=False, server_default="admin")
        )
    with op.batch_alter_table("api_keys") as batch:
        # The default only filled in the existing keys: a new key's role is always chosen.
        batch.alter_column("role", existing_type=sa.String(length=16), server_default=None)
        batch.create_check_constraint("ck_api_keys_role", "role IN ('admin', 'member', 'viewer')")

    old_unique = _idempotency_unique_name(op.get_bind())
    with op.batch_alter_table("jobs", naming_convention=_UNNAMED_UNIQUE) as batch:
        batch.add_column(sa.Column("owner_key_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_jobs_owner_key_id_api_keys",
            "api_keys",
            ["owner_key_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index(batch.f("ix_jobs_owner_key_id"), ["owner_key_id"], unique=False)
        batch.drop_constraint(old_unique, type_="unique")
        batch.create_unique_constraint(
            "uq_jobs_owner_idempotency_key", ["owner_key_id", "idempotency_key"]
        )

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("key_name", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_kind", sa.String(length=32), nullable=True),
        sa.Column("target_id", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name="fk_audit_log_key_id_api_keys", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_log") as batch:
        batch.create_index("ix_audit_log_action_at", ["action", "at"], unique=False)
        batch.create_index(batch.f("ix_audit_log_at"), ["at"], unique=False)
        batch.create_index(batch.f("ix_audit_log_key_id"), ["key_id"], unique=False)

    with op.batch_alter_table("secrets") as batch:
        batch.add_column(sa.Column("hosts", sa.JSON(), nullable=True))
    op.execute("UPDATE secrets SET hosts = '[]'")
    with op.batch_alter_table("secrets") as batch:
        batch.alter_column("hosts", existing_type=sa.JSON(), nullable=False)


def _idempotency_unique_name(bind: sa.engine.Connection) -> str:
    for constraint in sa.inspect(bind).get_unique_constraints("jobs"):
        if constraint["column_names"] == ["idempotency_key"]:
            return constraint["name"] or "uq_jobs_idempotency_key"
    raise RuntimeError("jobs has no UNIQUE (idempotency_key) to replace: is this revision 0004?")


def downgrade() -> None:
    with op.batch_alter_table("secrets") as batch:
        batch.drop_column("hosts")

    with op.batch_alter_table("audit_log") as batch:
        batch.drop_index(batch.f("ix_audit_log_key_id"))
        batch.drop_index(batch.f("ix_audit_log_at"))
        batch.drop_index("ix_audit_log_action_at")
    op.drop_table("audit_log")

    # The global constraint comes back: of the jobs that share an Idempotency-Key, the oldest
    # keeps it.
    op.execute(
        "UPDATE jobs SET idempotency_key = NULL WHERE idempotency_key IS NOT NULL AND id NOT IN"
        " (SELECT MIN(id) FROM jobs WHERE idempotency_key IS NOT NULL GROUP BY idempotency_key)"
    )
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("uq_jobs_owner_idempotency_key", type_="unique")
        batch.create_unique_constraint("jobs_idempotency_key_key", ["idempotency_key"])
        batch.drop_index(batch.f("ix_jobs_owner_key_id"))
        batch.drop_constraint("fk_jobs_owner_key_id_api_keys", type_="foreignkey")
        batch.drop_column("owner_key_id")

    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint("ck_api_keys_role", type_="check")
        batch.drop_column("role")
