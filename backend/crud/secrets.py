"""Server-side secrets: sealed with Fernet under a key derived from the settings' secrets_key.

Only `treegrpo secret` (set, list, delete; an admin's tool on the server) and the workers
(open) call these; no API route writes or opens a secret. Each secret names the hosts it may be
sent to (`hosts`, entries as in treegrpo/egress.py); the API reads those, never the value, to
refuse at submit a job that would send it elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.models import Secret, utcnow
from treegrpo.egress import HostRule, parse_hosts


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


def set_secret(
    session: Session, *, name: str, value: str, hosts: Sequence[str], secrets_key: str | None
) -> bool:
    """Store (or replace) a secret bound to `hosts`; True when it was new."""
    entries = [str(rule) for rule in parse_hosts(hosts)]
    if not entries:
        raise SecretError(f"secret {name!r} needs at least one host it may be sent to")
    sealed = _fernet(secrets_key).encrypt(value.encode()).decode("ascii")
    row = session.scalar(select(Secret).where(Secret.name == name))
    if row is None:
        session.add(Secret(name=name, sealed=sealed, hosts=entries))
        return True
    row.sealed, row.hosts, row.updated_at = sealed, entries, utcnow()
    return False


def secret_hosts(session: Session, *, names: Iterable[str]) -> dict[str, tuple[HostRule, ...]]:
    """The hosts of each stored secret among `names` (missing names are left out)."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    rows = session.execute(select(Secret.name, Secret.hosts).where(Secret.name.in_(wanted)))
    return {name: parse_hosts(hosts or []) for name, hosts in rows}


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


def list_secrets(session: Session) -> list[tuple[str, str, list[str]]]:
    """(name, last update as ISO text, hosts), never a value."""
    rows = session.scalars(select(Secret).order_by(Secret.name))
    return [(row.name, row.updated_at.isoformat(), list(row.hosts or [])) for row in rows]


def delete_secret(session: Session, *, name: str) -> bool:
    row = session.scalar(select(Secret).where(Secret.name == name))
    if row is None:
        return False
    session.delete(row)
    return True
