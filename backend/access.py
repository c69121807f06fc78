"""Who may do what: the three roles of API keys, and the owner rule for runs (README "Roles").

- viewer: reads only.
- member: also submits jobs (branches included) and manages the runs it submitted: cancel,
  resume, rename, tag, annotate, delete.
- admin: also manages every run (those of other keys, and ownerless ones from before roles),
  reads the audit log, and manages keys and secrets.

Pure rules over a Caller; the API's dependencies (backend/api/deps.py) and the routes apply
them, and a refusal is backend.errors.Forbidden naming the role needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.errors import Forbidden
from backend.models import KeyRole

_RANK = {KeyRole.viewer: 0, KeyRole.member: 1, KeyRole.admin: 2}


@dataclass(frozen=True)
class Caller:
    """The key a request came with."""

    key_id: int
    name: str
    role: KeyRole

    def has(self, needed: KeyRole) -> bool:
        return _RANK[self.role] >= _RANK[needed]


def require_role(caller: Caller, needed: KeyRole, action: str) -> None:
    """Forbidden unless the caller's role is `needed` or above."""
    if not caller.has(needed):
        raise Forbidden(
            f"{action} needs the {needed.value} role"
            + (" (or admin)" if needed is KeyRole.member else "")
            + f"; key {caller.name!r} is a {caller.role.value}",
            needed=needed.value,
        )


def may_manage(caller: Caller, owner_key_id: int | None) -> bool:
    """Whether the caller may change a run owned by `owner_key_id`."""
    if caller.has(KeyRole.admin):
        return True
    return caller.has(KeyRole.member) and owner_key_id == caller.key_id


def require_manage(caller: Caller, *, job_id: int, owner_key_id: int | None, action: str) -> None:
    """Forbidden unless the caller may change this run. The refusal does not name the owner:
    a member learns only that the run is not its own."""
    require_role(caller, KeyRole.member, action)
    if not may_manage(caller, owner_key_id):
        raise Forbidden(
            f"{action} of job {job_id} needs the admin role: a member manages only the runs "
            f"its own key submitted, and key {caller.name!r} did not submit this one",
            needed=KeyRole.admin.value,
        )
