"""Server-side secrets: sealed with Fernet under a key derived from the settings' secrets_key.

Only `treegrpo secret` (set, list, delete) and the workers (open) call these; no API route does.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.models import Secret, utcnow


class SecretError(LookupError):
    """A secret that is missing, or that cannot be opened with this key."""


def _fernet(secrets_key: str | None) -> Any:
    from cryptography.fernet import Fernet

    if not secrets_key:
        raise SecretError(
            "no secrets key: set TREEGRPO_SECRETS_KEY (any long random string) for the workers "
            "and the `treegrpo secret` command"
        )
    # Any string -> the 32-byte urlsafe-base64 key Fernet takes.
    digest = hashlib.sha256(b"treegrpo-secrets:" + secrets_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def set_secret(session: Session, *, name: str, value: str, secrets_key: str | None) -> bool:
    """Store (or replace) a secret; True when it was new."""
    sealed = _fernet(secrets_key).encrypt(value.encode()).decode("ascii")
    row = session.scalar(select(Secret).where(Secret.name == name))
    if row is None:
        session.add(Secret(name=name, sealed=sealed))
        return True
    row.sealed, row.updated_at = sealed, utcnow()
    return False


def open_secret(session: Session, *, name: str, secrets_key: str | None) -> str:
    from cryptography.fernet import InvalidToken

    row = session.scalar(select(Secret).where(Secret.name == name))
    if row is None:
        raise SecretError(f"no secret named {name!r} (store one with `treegrpo secret set {name}`)")
    try:
        return _fernet(secrets_key).decrypt(row.sealed.encode()).decode()
    except InvalidToken:
        raise SecretError(
            f"secret {name!r} cannot be opened with this TREEGRPO_SECRETS_KEY (was it sealed "
            "with another?)"
        ) from None


def list_secrets(session: Session) -> list[tuple[str, str]]:
    """(name, last update as ISO text), never a value."""
    rows = session.scalars(select(Secret).order_by(Secret.name))
    return [(row.name, row.updated_at.isoformat()) for row in rows]


def delete_secret(session: Session, *, name: str) -> bool:
    row = session.scalar(select(Secret).where(Secret.name == name))
    if row is None:
        return False
    session.delete(row)
    return True
