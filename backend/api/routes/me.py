"""/me: the caller's key, its role and what the role allows (the dashboard hides the rest)."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import AnyKey
from backend.api.problems import problem_responses
from backend.models import KeyRole
from backend.schemas import MePublic

router = APIRouter(tags=["access"])


@router.get(
    "/me", response_model=MePublic, responses=problem_responses(401), summary="The caller's key"
)
async def me(caller: AnyKey) -> MePublic:
    """Needs a key even where reads do not: it answers about that key."""
    return MePublic(
        key_id=caller.key_id,
        name=caller.name,
        role=caller.role.value,
        can_submit=caller.has(KeyRole.member),
        can_manage_all=caller.has(KeyRole.admin),
        can_read_audit=caller.has(KeyRole.admin),
    )
