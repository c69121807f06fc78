"""One audit entry per change a caller makes through the API (GET /audit reads them): who
(the key), what (an action such as "job.cancel" and its target), when, and a detail that never
holds a secret's value or a key's plaintext. Every route that changes something calls `audit`."""

from __future__ import annotations

from sqlalchemy.orm import Session

from backend import crud
from backend.access import Caller


def audit(
    session: Session,
    caller: Caller,
    action: str,
    target_kind: str,
    target_id: object,
    **detail: object,
) -> None:
    crud.record_audit(
        session,
        key_id=caller.key_id,
        key_name=caller.name,
        action=action,
        target_kind=target_kind,
        target_id=target_id,
        detail=detail,
    )
