"""The Runs table's own script (frontend/static/runs.js) in headless Chromium, on a table drawn
the way the Runs tab draws it, with Gradio's `element` and `trigger` stood in for."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from test_ui_browser import CHROMIUM, CHROMIUM_ARGS, IN_CI

from frontend.static import read_static

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not IN_CI,
    reason=f"{CHROMIUM} is missing (apt-get install chromium); required under CI=true",
)


def _rows(*job_ids: int) -> str:
    return "".join(f'<tr data-job-id="{j}"><td>#{j}</td><td>run {j}</td></tr>' for j in job_ids)


@contextmanager
def _blank_page() -> Iterator[Any]:
    """A headless Chromium page, closed after the block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 800, "height": 600})
        finally:
            browser.close()


@contextmanager
def _table_page() -> Iterator[Any]:
    """Rows #5, #4, #3 drawn as the Runs tab draws them, with runs.js loaded on them."""
    with _blank_page() as page:
        page.set_content(
            '<div id="tg-jobs"><table style="font-size:24px"><tbody id="body">'
            + _rows(5, 4, 3)
            + "</tbody></table></div>"
        )
        page.add_script_tag(
            content="window.__triggered = [];\n"
            "((element, trigger) => {\n" + read_static("runs.js") + "\n})("
            "document.getElementById('tg-jobs'),"
            " (name, data) => window.__triggered.push([name, data.job_id]));"
        )
        yield page


def _point(page: Any, job_id: int) -> tuple[float, float]:
    box = page.locator(f'tr[data-job-id="{job_id}"]').bounding_box()
    return box["x"] + 10, box["y"] + box["height"] / 2


def _refresh_with_a_new_run_on_top(page: Any) -> None:
    """What a Runs tab refresh does: the whole table drawn again, here with run 6 on top."""
    page.evaluate(
        "(rows) => { document.getElementById('body').innerHTML = rows; }", _rows(6, 5, 4, 3)
    )


def test_a_refresh_between_press_and_release_still_picks_the_row_pressed() -> None:
    """The table refreshes every few seconds; one that lands while the button is down (a new
    run at the top) moved the rows, and the click picked the pressed row's neighbour."""
    with _table_page() as page:
        x, y = _point(page, 5)
        page.mouse.move(x, y)
        page.mouse.down()
        _refresh_with_a_new_run_on_top(page)
        assert (
            page.evaluate(f"() => document.elementFromPoint({x}, {y}).closest('tr').dataset.jobId")
            == "6"
        )
        page.mouse.up()
        assert page.evaluate("() => window.__triggered") == [["select", 5]]
        selected = page.locator("tr.tg-selected")
        assert selected.count() == 1 and selected.get_attribute("data-job-id") == "5"
        # A plain click on another row later picks that row.
        page.wait_for_timeout(50)
        page.locator('tr[data-job-id="3"]').click()
        assert page.evaluate("() => window.__triggered")[-1] == ["select", 3]
        page.locator('tr[data-job-id="4"]').dblclick()
        assert page.evaluate("() => window.__triggered")[-1] == ["double_click", 4]


def test_a_double_click_opens_the_row_pressed_when_a_refresh_moved_the_rows() -> None:
    """The evaluation story's flake: a refresh with a new run on top landed within a double
    click on run #1, and the Run tab opened #2, the row then under the pointer."""
    with _table_page() as page:
        x, y = _point(page, 4)
        page.mouse.click(x, y)
        page.mouse.down()
        _refresh_with_a_new_run_on_top(page)
        page.mouse.up()
        # The browser's dblclick goes to the row now under the pointer: sent as it would be.
        page.locator('tr[data-job-id="5"]').dispatch_event("dblclick")
        assert page.evaluate("() => window.__triggered") == [
            ["select", 4],
            ["select", 4],
            ["double_click", 4],
        ]


def test_the_inspector_prints_a_value_that_rounds_to_zero_without_a_sign() -> None:
    """tree.js's number format (the canvas panel and labels): the root read "A -0.00"."""
    source = read_static("tree.js")
    start = source.index("const fmt = ")
    end = source.index("\n};\n", start) + 3
    with _blank_page() as page:
        shown = page.evaluate(
            "(() => {" + source[start:end] + "\n"
            "return [[-0.001, 2, true], [0.004, 2, true], [0.3, 2, true], [-0.02, 2, true],"
            " [-0.0001, 4, false], [null, 2, true]].map((a) => fmt(...a)); })()"
        )
    assert shown == ["0.00", "0.00", "+0.30", "-0.02", "-0.0001", "n/a"]
