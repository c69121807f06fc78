"""The dashboard on a closed studio (TREEGRPO_READS_REQUIRE_KEY=true, the compose default): without
a key it says plainly that reads need one and shows no run; with the pasted key every read goes
with it and the runs appear. Skipped only when /usr/bin/chromium is missing and CI is not true."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from ui_stack import CHROMIUM, CHROMIUM_ARGS, Stack, start_stack

IN_CI = os.environ.get("CI", "").strip().lower() == "true"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not IN_CI,
        reason=f"{CHROMIUM} is missing (apt-get install chromium); required under CI=true",
    ),
]


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("ui-closed"), worker=False, reads_require_key=True
    )
    try:
        yield running
    finally:
        running.stop()


def _wait_text(page: object, selector: str, pattern: str, timeout_ms: int = 30_000) -> str:
    seen = ""
    for _ in range(timeout_ms // 250):
        loc = page.locator(selector)  # type: ignore[attr-defined]
        seen = loc.inner_text() if loc.count() else ""
        if re.search(pattern, seen):
            return str(seen)
        page.wait_for_timeout(250)  # type: ignore[attr-defined]
    raise AssertionError(f"{selector} never matched {pattern!r}; last text: {seen!r}")


def test_a_closed_studio_needs_the_key_to_show_anything(closed: Stack) -> None:
    from playwright.sync_api import sync_playwright

    with closed.api() as anonymous:
        assert anonymous.get("/jobs").status_code == 401  # the stack really is closed
    with closed.api(closed.key) as api:
        made = api.post(
            "/jobs", json={"kind": "train", "name": "closed-run-7", "preset": "tiny-treegrpo"}
        )
        assert made.status_code == 201, made.text

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(20_000)
            page.goto(closed.ui)
            _wait_text(page, "#tg-key-note", "Reads need a key on this studio")
            jobs = _wait_text(page, "#tg-jobs", "needs an API key to read")
            assert "closed-run-7" not in jobs
            field = page.locator("#tg-api-key textarea, #tg-api-key input").first
            field.fill(closed.key)
            field.dispatch_event("blur")
            _wait_text(page, "#tg-key-note", "reads included")
            page.get_by_role("tab", name="Runs", exact=True).click()
            _wait_text(page, "#tg-jobs", "closed-run-7")
        finally:
            browser.close()
