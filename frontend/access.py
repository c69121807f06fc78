"""What the dashboard lets the current key do, from GET /me (README "Roles").

The API decides (a refused action is a 403 whatever the page shows); the page only disables
what would be refused and says why, so nobody clicks a button that cannot work. `me` is the
caller as a plain dict {"key_id", "name", "role"} (a gr.State), or None without a valid key.
"""

from __future__ import annotations

import html
from typing import Any

from frontend.client import ApiError, Job

NO_KEY = "paste an API key to submit or manage runs"


def me_of(client: Any) -> dict[str, Any] | None:
    """The key's {"key_id", "name", "role"}, or None when there is no valid key."""
    try:
        found = client.me()
    except ApiError:
        return None
    return {"key_id": found.key_id, "name": found.name, "role": found.role}


def submit_refusal(me: dict[str, Any] | None) -> str | None:
    """Why this key may not submit (or branch), or None when it may."""
    if not me:
        return NO_KEY
    if me.get("role") == "viewer":
        return f"key {me.get('name')!r} is a viewer: it reads only (submitting needs a member)"
    return None


def manage_refusal(me: dict[str, Any] | None, job: Job | None) -> str | None:
    """Why this key may not cancel, resume, edit or delete `job`, or None when it may."""
    if job is None:
        return None
    refused = submit_refusal(me)
    if refused is not None or me is None:
        return refused
    if me.get("role") == "admin" or job.owner_key_id == me.get("key_id"):
        return None
    owner = f"key {job.owner!r}" if job.owner else "no key (it predates roles)"
    return (
        f"run #{job.id} belongs to {owner}: a member manages only its own runs "
        "(an admin manages all)"
    )


def refusal_html(reason: str | None) -> str:
    if reason is None:
        return ""
    return f'<div class="tg-muted tg-refusal">Not allowed: {html.escape(reason)}.</div>'


def who_html(me: dict[str, Any] | None) -> str:
    if not me:
        return ""
    return (
        f" Key <b>{html.escape(str(me.get('name')))}</b>, role "
        f'<span class="tg-role">{html.escape(str(me.get("role")))}</span>.'
    )
