"""The tree inspector's speed targets (issue 28), held on this machine: run serially, never
under xdist (`make perf` runs the `perf` marker alone; `make test` leaves it out: a timing taken
under xdist beside CI's other work is not the target).

Each tree is its own seeded job (realistic images: 128 px textured colour scenes, or the digits
model's 16 px strokes; atlases as the worker writes them) and is opened in a fresh browser
context (cold cache), by picking its job in the inspector: the clock starts at that click.

- drawn: the structure painted (the page's data-drawn-at, in the frame after the draw);
  complete: every tile of the atlas painted (data-complete-at);
- interactive: drawn, and then a click on the root fills the panel's numbers within 100 ms,
  with no main-thread task over 200 ms from the click that opened the tree to that panel.

Targets: any tree up to 64 leaves complete < 0.5 s; 256 leaves interactive < 0.6 s and
complete < 1 s; 4,096 leaves (the config's cap) interactive < 1.5 s.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tree_page as tp
from test_ui_browser import CHROMIUM, CHROMIUM_ARGS, IN_CI
from ui_factories import tree_json
from ui_stack import Stack, seed_tree, start_stack

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
PANEL_S = 0.1
LONG_TASK_MS = 200

pytestmark = [
    pytest.mark.perf,
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not IN_CI,
        reason=f"{CHROMIUM} is missing (apt-get install chromium); required under CI=true",
    ),
]

# name: (k, depth, steps, images, drawn target s, complete target s)
CASES: dict[str, tuple[int, int, int, str, float | None, float | None]] = {
    "27 leaves, colour": (3, 3, 10, "colour", None, 0.5),
    "64 leaves, colour": (4, 3, 10, "colour", None, 0.5),
    "27 leaves, 16 px digits": (3, 3, 10, "digits", None, 0.5),
    "256 leaves, colour": (4, 4, 10, "colour", 0.6, 1.0),
    "4,096 leaves, colour": (4, 6, 10, "colour", 1.5, None),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("ui-tree-perf"), worker=False)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def jobs(stack: Stack) -> dict[str, int]:
    out = {}
    for name, (k, depth, steps, images, _, _) in CASES.items():
        tree = tree_json(k=k, depth=depth, steps=steps, window_start=2, job_id=0)
        out[name] = seed_tree(stack, tree, name=name, images=images)
    return out


def _open(page: Any, stack: Stack, job_id: int) -> dict[str, Any]:
    page.goto(stack.ui)
    page.get_by_role("tab", name="Tree inspector", exact=True).click()
    page.locator("#tg-tree-job input").click()
    option = page.get_by_role("option", name=re.compile(f"^#{job_id} "))
    option.wait_for()
    tp.arm(page)
    option.click()
    timed: dict[str, Any] = tp.wait_drawn(page, None, timeout=60)
    root = tp.hook(page, "root")
    tp.arm_press_only(page)
    tp.click_node(page, root)
    timed["panel"] = tp.panel_delay(page, root)
    timed["longest"] = max(tp.long_tasks(page), default=0.0)
    return timed


@pytest.mark.parametrize("name", list(CASES))
def test_tree_opens_within_its_budget(stack: Stack, jobs: dict[str, int], name: str) -> None:
    from playwright.sync_api import sync_playwright

    _, _, _, _, drawn_target, complete_target = CASES[name]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(60_000)
            timed = _open(page, stack, jobs[name])
            if name.startswith("4,096"):
                page.locator("#tg-tree").screenshot(
                    path=str(DOCS_IMAGES / "dashboard-4096-leaf-tree.png")
                )
        finally:
            browser.close()
    print(
        f"\n{name}: {timed['nodes']} drawn nodes; drawn {timed['drawn'] * 1000:.0f} ms, complete "
        f"{timed['complete'] * 1000:.0f} ms, root click -> panel {timed['panel'] * 1000:.0f} ms, "
        f"longest main-thread task {timed['longest']:.0f} ms (value in the page "
        f"{timed['value'] * 1000:.0f} ms, draw {timed['draw_ms']:.0f} ms)"
    )
    assert timed["panel"] < PANEL_S, timed
    assert timed["longest"] <= LONG_TASK_MS, timed
    if drawn_target is not None:
        assert timed["drawn"] < drawn_target, timed
    if complete_target is not None:
        assert timed["complete"] < complete_target, timed
