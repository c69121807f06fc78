"""How a job's child process resolves the secret references of its config (treegrpo/secrets.py):
`<field>_env: NAME` from the worker's environment, `<field>_secret: NAME` from the database's
sealed store, opened with the settings' secrets_key. The value goes to the reward factory only;
it is never written into the config, the log or an artifact."""

from __future__ import annotations

import os

from backend.crud.secrets import open_secret
from backend.db import session_scope
from backend.settings import get_settings


def resolve_secret(kind: str, name: str) -> str:
    if kind == "env":
        value = os.environ.get(name)
        if not value:
            raise LookupError(f"the worker's environment has no variable {name}")
        return value
    with session_scope() as session:
        return open_secret(session, name=name, secrets_key=get_settings().secrets_key)
