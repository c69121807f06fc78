"""Where the backend finds a dashboard without importing one: a package that provides a UI
registers `mount(app) -> None` in the entry-point group `treegrpo.ui` (the frontend registers
`frontend.app:mount`)."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

UI_ENTRY_POINT_GROUP = "treegrpo.ui"


def installed_uis() -> list[EntryPoint]:
    return list(entry_points(group=UI_ENTRY_POINT_GROUP))
