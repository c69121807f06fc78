"""The audit log: one row per mutation, who (key id and name), what and when. Only added to.

Routes record after their change is committed, in the same short session; the `treegrpo`
commands that change keys (and secrets) on the server record the operator as `cli:<user>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backend.models import NAME_CHARS, AuditEntry


def record_audit(
    session: Session,
    *,
    key_id: int | None,
    key_name: str,
    action: str,
    target_kind: str | None = None,
    target_id: object = None,
    detail: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Add one entry and commit. `detail` says what changed; it must never hold a secret's
    value or a key's plaintext."""
    entry = AuditEntry(
        key_id=key_id,
        key_name=key_name[:NAME_CHARS],
        action=action,
        target_kind=target_kind,
        target_id=None if target_id is None else str(target_id)[:NAME_CHARS],
        detail=dict(detail or {}),
    )
    session.add(entry)
    session.commit()
    return entry


def list_audit(
    session: Session,
    *,
    key_id: int | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[AuditEntry], int]:
    """Newest first, with the count of all matching entries."""
    query = select(AuditEntry)
    if key_id is not None:
        query = query.where(AuditEntry.key_id == key_id)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit).offset(offset))
    return list(rows), int(count)
