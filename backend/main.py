"""The served app: `uvicorn backend.main:app` (what `treegrpo serve` runs).

The dashboard is mounted at /ui through an optional hook: a package that provides a UI registers
`mount(app) -> None` in the entry-point group `treegrpo.ui` (the frontend registers
`frontend.app:mount`). The backend never imports the frontend; without such an entry point,
or when it fails to load, the API runs alone.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from fastapi import FastAPI

from backend.api import create_app

log = logging.getLogger("backend.main")

UI_ENTRY_POINT_GROUP = "treegrpo.ui"


def mount_ui(app: FastAPI) -> bool:
    """Mount the first UI registered under `treegrpo.ui` at /ui. Returns whether one was."""
    for entry in entry_points(group=UI_ENTRY_POINT_GROUP):
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
mount_ui(app)
