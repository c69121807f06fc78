"""How a job's child process resolves the secret references of its config (treegrpo/secrets.py):
`<field>_env: NAME` from the worker's environment, only for names the operator lists
(TREEGRPO_REFERABLE_ENV); `<field>_secret: NAME` from the database's sealed store, opened with
the settings' secrets_key, only when every URL the value goes to is among the secret's hosts.
The value goes to the reward factory only; it is never written into the config, the log or an
artifact."""

from __future__ import annotations

import os

from backend.crud.secrets import SecretError, open_secret, secret_hosts
from backend.db import session_scope
from backend.settings import get_settings
from treegrpo.secrets import referable_resolver, secret_destination_problem


def resolve_secret(kind: str, name: str, destinations: tuple[str, ...]) -> str:
    settings = get_settings()
    if kind == "env":
        referable = settings.job_limits.referable_env
        return referable_resolver(os.environ, referable)(kind, name, destinations)
    with session_scope() as session:
        hosts = secret_hosts(session, names=[name])
        if name not in hosts:
            raise SecretError(f"no secret named {name!r}")
        problem = secret_destination_problem(name, hosts[name], destinations)
        if problem is not None:
            raise SecretError(problem)
        return open_secret(session, name=name, secrets_key=settings.secrets_key)
