"""The served app: `uvicorn backend.main:app` (what `treegrpo serve` runs).

The dashboard is mounted at /ui through an optional hook (backend/ui_hook.py): a package that
provides a UI registers `mount(app) -> None` in the entry-point group `treegrpo.ui` (the frontend
registers `frontend.app:mount`). The backend never imports the frontend; without such an entry
point, when it fails to load, or with TREEGRPO_SERVE_UI=false, the API runs alone.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from backend.api import create_app
from backend.settings import get_settings
from backend.ui_hook import UI_ENTRY_POINT_GROUP, installed_uis

log = logging.getLogger("backend.main")

__all__ = ["UI_ENTRY_POINT_GROUP", "app", "mount_ui"]


def mount_ui(app: FastAPI) -> bool:
    """Mount the first UI registered under `treegrpo.ui` at /ui. Returns whether one was."""
    for entry in installed_uis():
        try:
            entry.load()(app)
        except Exception:
            log.exception(
                "the UI %s (%s) failed to mount; serving the API alone", entry.name, entry.value
            )
            continue
        app.state.ui_mounted = True
        return True
    return False


app = create_app()
if get_settings().serve_ui:
    mount_ui(app)
