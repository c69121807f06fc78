"""The tree inspector's canvas in Debian's Chromium against the real stack, reads closed (the
compose default), with realistic seeded trees: 128 px textured colour images for a 27-leaf and
two 256-leaf trees, and a 16 px digits tree (ui_stack.seed_tree; atlases as the worker writes
them, and one tree without, which the API builds on first request).

- Each open is timed from the user's click, the first in a fresh browser context (cold cache):
  drawn (structure painted) and complete (every tile), printed; the thresholds here are hang
  guards only (the targets are asserted by test_ui_tree_perf.py, serially).
- Right after the 256-leaf tree is drawn, a click on its root fills the panel's numbers from the
  page's JSON (printed with the longest main-thread task); the panel then gets the big image.
- Fold, the best-leaves filter, zoom, keyboard (arrows, Enter) and pan work on the canvas.
- The atlas reaches the page through Gradio's own file route: same origin, no key in any URL,
  nothing answers 401, nothing leaves the loopback interface.
Screenshots of the 256-leaf tree go to docs/images (the README shows them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tree_page as tp
from test_ui_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, IN_CI, Browser
from ui_factories import tree_json
from ui_stack import Stack, seed_tree, start_stack

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not IN_CI,
        reason=f"{CHROMIUM} is missing (apt-get install chromium); required under CI=true",
    ),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("ui-tree"), worker=False, reads_require_key=True)
    try:
        yield running
    finally:
        running.stop()


def _pick_job(b: Browser, job_id: int) -> None:
    """Pick the job in the inspector's own list; the clock starts at the option's click."""
    b.page.locator("#tg-tree-job input").click()
    option = b.page.get_by_role("option", name=re.compile(f"^#{job_id} "))
    option.wait_for()
    tp.arm(b.page)
    option.click()


def test_tree_inspector_canvas(stack: Stack) -> None:
    from playwright.sync_api import sync_playwright

    big = tree_json(k=4, depth=4, steps=10, window_start=2, job_id=0, prompt="a red fox")
    small = tree_json(k=3, depth=3, steps=10, window_start=2, job_id=0, prompt="a lighthouse")
    colour = seed_tree(stack, big, big, small, name="colour trees", images="colour")
    digits = seed_tree(stack, small, name="digits tree", images="digits", atlas=False)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(30_000)
            b = Browser(page, stack)
            refused: list[str] = []
            page.on("response", lambda r: refused.append(r.url) if r.status == 401 else None)
            try:
                _story(b, colour, digits)
            except BaseException:
                b.shot("tree-failure")
                print(stack.logs())
                raise
            b.assert_loopback_only()
            assert not refused, f"answered 401: {refused}"
            keyed = [u for u in b.requests if stack.key in u]
            assert not keyed, f"the key is in a URL: {keyed}"
        finally:
            browser.close()
    print(f"\nscreenshots: {ARTIFACTS} and {DOCS_IMAGES}")


def _story(b: Browser, colour: int, digits: int) -> None:
    page = b.page
    page.goto(b.stack.ui)
    b.set_key(b.stack.key)
    b.tab("Tree inspector")

    # First open in a fresh context: the job's newest tree (27 leaves, colour).
    _pick_job(b, colour)
    first = tp.wait_drawn(page, None)
    print(f"\n27-leaf colour tree, first open: {_fmt(first)}")
    assert first["nodes"] == 68 and first["tiles"] == 68
    assert first["complete"] < 30, first  # a hang guard, not the target
    state = tp.hook(page, "state")
    assert not state["pixelated"]
    (atlas_url,) = state["atlases"]
    assert atlas_url.startswith(b.stack.base + "/ui/") and "gradio_api/file=" in atlas_url

    # The 256-leaf tree ("older ▶"), then a click on its root right after the draw.
    tp.arm(page)
    page.locator("#tg-tree-older").click()
    older = tp.wait_drawn(page, str(first["tree"]))
    root = tp.hook(page, "root")
    tp.arm(page)
    tp.click_node(page, root)
    panel = tp.panel_delay(page, root)
    longest = max(tp.long_tasks(page), default=0.0)
    print(
        f"256-leaf colour tree: {_fmt(older)}; root click -> panel numbers "
        f"{panel * 1000:.0f} ms; longest main-thread task since {longest:.0f} ms"
    )
    assert older["nodes"] == 598 and older["tiles"] == 598 and older["tiles_drawn"] > 50
    assert older["drawn"] < 30, older
    numbers = b.text("#tg-tree [data-info]")
    assert "leaves below" in numbers and "256" in numbers and "root" in numbers
    # The one event: the panel's big image (a data: URI, so it works with reads closed).
    page.wait_for_selector(f".tg-panel[data-node-id='{root}'] .tg-panel-image img[src^='data:']")
    state = tp.hook(page, "state")
    assert state["selected"] == root and state["zoom"] == pytest.approx(0.2)
    # Fitted with the root centred.
    point = tp.hook(page, "pos", root)
    box = page.locator("#tg-tree canvas").bounding_box()
    assert abs(point["x"] - (box["x"] + box["width"] / 2)) < 2
    page.locator("#tg-tree").scroll_into_view_if_needed()
    b.shot("tree-256-fitted")
    # For the README: zoomed to ~50 % around the root, its thumbnails readable.
    for _ in range(4):
        page.locator("#tg-tree button[data-zoom='in']").click()
    page.locator("#tg-tree").screenshot(path=str(DOCS_IMAGES / "dashboard-big-tree.png"))
    page.locator("#tg-tree button[data-zoom='fit']").click()

    # Fold the root's first branching descendant with a click on its ± button, then unfold.
    drawn = len(tp.ids(page))
    folds = tp.ids(page, tp.FOLD)
    assert len(folds) == 1 + 4 + 16 + 64
    top = folds[0]
    point, zoom = tp.hook(page, "pos", top), state["zoom"]
    page.mouse.click(point["x"], point["y"] + (44 / 2 + 7) * zoom)
    assert len(tp.ids(page)) == 2  # the root and the folded node
    assert tp.hook(page, "state")["folded"] == [top]
    page.mouse.click(point["x"], point["y"] + (44 / 2 + 7) * zoom)
    assert len(tp.ids(page)) == drawn

    # The best leaves: listed with their rewards, the rest of the tree dimmed.
    page.locator("#tg-tree button[data-filter='best']").click()
    best = page.locator("#tg-tree .tg-rank-best li")
    assert best.count() == 5 and "reward 1.000" in best.first.inner_text()
    assert tp.hook(page, "dimmed") > drawn - 30
    b.shot("tree-256-best")
    page.locator("#tg-tree button[data-filter='all']").click()
    assert tp.hook(page, "dimmed") == 0

    # Keyboard on the focused canvas: down to the branch point, down to one of its 4
    # children, right to the next sibling, up again; Enter selects (numbers at once).
    page.locator("#tg-tree canvas").focus()
    page.keyboard.press("ArrowDown")
    branch_point = tp.hook(page, "state")["cursor"]
    assert branch_point == top
    page.keyboard.press("ArrowDown")
    child = tp.hook(page, "state")["cursor"]
    page.keyboard.press("ArrowRight")
    sibling = tp.hook(page, "state")["cursor"]
    assert child not in (top, root) and sibling not in (child, top, root)
    page.keyboard.press("ArrowUp")
    assert tp.hook(page, "state")["cursor"] == top
    page.keyboard.press("Enter")
    assert tp.hook(page, "state")["selected"] == top
    assert page.locator("#tg-tree [data-info]").get_attribute("data-info-node") == str(top)
    b.wait_text("#tg-tree [data-live]", "node")

    # Zoom in, drag to pan, fit again.
    page.locator("#tg-tree button[data-zoom='in']").click()
    assert tp.hook(page, "state")["zoom"] == pytest.approx(0.25)
    before = tp.hook(page, "state")["pan"]
    box = page.locator("#tg-tree canvas").bounding_box()
    page.mouse.move(box["x"] + 300, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 90, steps=4)
    page.mouse.up()
    after = tp.hook(page, "state")["pan"]
    assert after[0] == pytest.approx(before[0] - 100, abs=1)
    page.locator("#tg-tree button[data-zoom='fit']").click()
    assert tp.hook(page, "state")["zoom"] == pytest.approx(0.2)

    # Re-open (newer, the 27-leaf tree again): cached view and atlas.
    tp.arm(page)
    page.locator("#tg-tree-newer").click()
    again = tp.wait_drawn(page, str(older["tree"]))
    print(f"27-leaf colour tree, opened again: {_fmt(again)}")

    # The digits tree: logged before atlases (the API builds it once), 16 px PNG, pixelated.
    _pick_job(b, digits)
    pixels = tp.wait_drawn(page, str(again["tree"]))
    print(f"16 px digits tree (atlas built by the API on first request): {_fmt(pixels)}")
    state = tp.hook(page, "state")
    assert state["pixelated"] and state["atlases"][0].endswith(".png")
    assert pixels["tiles"] == 68
    page.locator("#tg-tree").screenshot(path=str(ARTIFACTS / "tree-digits.png"))


def _fmt(t: dict[str, Any]) -> str:
    return (
        f"value in the page {t['value'] * 1000:.0f} ms, drawn {t['drawn'] * 1000:.0f} ms "
        f"(draw {t['draw_ms']:.0f} ms), complete {t['complete'] * 1000:.0f} ms "
        f"({t['nodes']} nodes, {t['tiles_drawn']} tiles in view)"
    )
