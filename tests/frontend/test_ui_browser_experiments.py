"""The Experiments tab in Debian's Chromium against the real stack (API, UI and a worker): an
experiment of 2 methods x 2 seeds x 2 epochs on the tiny model shows its grid table, reward
bands (one per method), the Pareto plot and the paired ratios, and offers CSV and PNG exports.
The screenshot goes to tests/frontend/artifacts/ (docs/images/dashboard-experiments.png is one).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ui_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, IN_CI, Browser
from ui_stack import Stack, start_stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not IN_CI,
        reason=f"{CHROMIUM} is missing (apt-get install chromium); required under CI=true",
    ),
]

EXPERIMENT = {
    "name": "tree vs dance",
    "axes": {"preset": ["tiny-treegrpo", "tiny-dancegrpo"], "seed": [0, 1]},
    "config": {"device": "cpu", "sampling.steps": 4, "checkpoint_every": 0},
    "budget": {"epochs": 2},
    "eval": {"count": 8, "every": 1},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("ui-stack-experiments"))
    try:
        yield running
    finally:
        running.stop()


def test_ui_experiments_tab(stack: Stack) -> None:
    from playwright.sync_api import sync_playwright

    with stack.api(stack.key) as api:
        made = api.post("/experiments", json=EXPERIMENT)
        assert made.status_code == 201, made.text
        experiment = made.json()
    for run in experiment["runs"]:
        job = stack.wait_job(run["job_id"], {"succeeded", "failed", "cancelled"}, timeout=600)
        assert job["status"] == "succeeded", stack.logs()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1100})
            page.set_default_timeout(60_000)  # a 2-core machine shared with others is slow
            b = Browser(page, stack)
            try:
                page.goto(stack.ui)
                b.wait_text("#tg-jobs", "tree vs dance", timeout=60)
                b.tab("Experiments")
                b.wait_text("#tg-exp-grid", "tiny-dancegrpo", timeout=90)
                # the grid: one row per method, each with its 2 succeeded runs
                rows = page.locator("#tg-exp-grid tbody tr")
                assert rows.count() == 2
                assert "2 succeeded" in rows.nth(0).inner_text()
                # bands: a median line inside a min-max band for each method
                page.wait_for_selector("#tg-exp-bands[data-groups='2']")
                assert page.locator("#tg-exp-bands polygon.band").count() == 2
                assert page.locator("#tg-exp-bands polyline.median").count() == 2
                # the Pareto plot: both methods, the front marked
                assert page.locator("#tg-exp-pareto circle.point").count() == 2
                assert page.locator("#tg-exp-pareto circle[data-front='1']").count() >= 1
                assert page.locator("#tg-exp-ratios").count() == 1
                # the exports are there to download
                assert page.locator("#tg-exp-csv").is_visible()
                assert page.locator("#tg-exp-png").is_visible()
                with page.expect_download() as download:
                    page.locator("#tg-exp-csv").click()
                text = Path(download.value.path()).read_text()
                assert text.startswith("group,seeds,final_reward_median")
                assert "tiny-treegrpo,2," in text
                # wall-clock on the x axis redraws the bands
                page.get_by_label("wall_clock").check()
                b.wait_text("#tg-exp-bands-box", "wall-clock seconds", timeout=15)
                page.get_by_label("cpu_clock").check()
                b.wait_text("#tg-exp-bands-box", "CPU seconds", timeout=15)
                b.shot("dashboard-experiments")
            except BaseException:
                b.shot("experiments-failure")
                print(stack.logs())
                raise
            b.assert_loopback_only()
        finally:
            browser.close()
    print(f"\nscreenshots: {ARTIFACTS}")
