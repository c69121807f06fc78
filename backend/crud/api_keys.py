"""API keys. Only a SHA-256 of each key is stored: keys are 256-bit random tokens, so a fast
hash is enough (there is no low-entropy password to stretch)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session

from backend.errors import NotFound
from backend.models import ApiKey, KeyRole, utcnow

KEY_PREFIX = "tgk_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_api_key(session: Session, *, name: str, role: KeyRole | str) -> tuple[ApiKey, str]:
    """Returns the row and the plaintext key, which is never stored and cannot be shown again.
    The role has no default here: every caller says what the key may do."""
    role = KeyRole(role)  # ValueError for anything but the three roles
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name, prefix=key[: len(KEY_PREFIX) + 6], hashed_key=hash_key(key), role=role.value
    )
    session.add(row)
    session.commit()
    return row, key


def verify_api_key(session: Session, *, key: str) -> ApiKey | None:
    """The active key row matching `key`, or None."""
    if not key or len(key) > 200:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.hashed_key == hash_key(key)))
    if row is None or row.revoked_at is not None:
        return None
    return row


_ACTIVE_KEY = select(ApiKey.id, ApiKey.name, ApiKey.role).where(
    ApiKey.hashed_key == bindparam("hashed"), ApiKey.revoked_at.is_(None)
)


def active_key(session: Session, *, key: str) -> tuple[int, str, str] | None:
    """(id, name, role) of the active key matching `key`, or None: verify_api_key for every
    request that needs a key, as one prepared Core statement (no ORM object to build)."""
    if not key or len(key) > 200:
        return None
    row = session.connection().execute(_ACTIVE_KEY, {"hashed": hash_key(key)}).first()
    return None if row is None else (int(row[0]), str(row[1]), str(row[2]))


def touch_api_key(session: Session, *, key_id: int, stale_after_seconds: float) -> bool:
    """Record that key `key_id` was used now, unless it was recorded within the last
    `stale_after_seconds` (one conditional UPDATE: concurrent requests write it once).
    Commits. Returns whether the row changed."""
    now = utcnow()
    cutoff = now - timedelta(seconds=stale_after_seconds)
    result = session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < cutoff),
        )
        .values(last_used_at=now)
    )
    session.commit()
    return bool(getattr(result, "rowcount", 0))


def owner_name(session: Session, *, owner_key_id: int | None) -> str | None:
    """The name of the key that owns a job (None for an ownerless one)."""
    if owner_key_id is None:
        return None
    return key_names(session, key_ids=[owner_key_id]).get(owner_key_id)


def key_names(session: Session, *, key_ids: Iterable[int]) -> dict[int, str]:
    """The names of these keys (revoked ones too): the owners the API shows."""
    wanted = set(key_ids)
    if not wanted:
        return {}
    rows = session.execute(select(ApiKey.id, ApiKey.name).where(ApiKey.id.in_(wanted)))
    return {int(key_id): str(name) for key_id, name in rows}


def list_api_keys(session: Session, *, include_revoked: bool = True) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(session.scalars(query).all())


def revoke_api_key(session: Session, *, key_id: int | None = None, name: str | None = None) -> int:
    """Revoke by id or by name (every active key of that name). Returns how many were revoked."""
    if (key_id is None) == (name is None):
        raise ValueError("give exactly one of key_id or name")
    where = ApiKey.id == key_id if key_id is not None else ApiKey.name == name
    result = session.execute(
        update(ApiKey)
        .where(where, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    count = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if count == 0:
        raise NotFound("active api key", key_id if key_id is not None else name)
    return count
