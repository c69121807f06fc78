"""The Datasets tab (issue 25) in Debian's Chromium against the real API: a JSONL file with
metadata is uploaded through the tab and listed with its rows, split and metadata column; its
rows are previewed and searched; a file with bad text is refused with its row number and nothing
is listed; a dataset a job uses shows that job and cannot be deleted, an unused one can.
Screenshots go to tests/frontend/artifacts/ (or $UI_ARTIFACTS)."""

from __future__ import annotations

import json
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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("ui-datasets"), worker=False)
    try:
        yield running
    finally:
        running.stop()


def _upload(b: Browser, path: Path, name: str) -> None:
    b.page.locator("#tg-dataset-file input[type=file]").set_input_files(str(path))
    b.page.wait_for_timeout(500)  # Gradio stores the file on its server first
    b.fill("tg-dataset-name", name)
    b.page.locator("#tg-dataset-upload").click()


def test_upload_preview_search_and_delete(stack: Stack, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    good = tmp_path / "digits.jsonl"
    good.write_text(
        "".join(json.dumps({"prompt": f"the number {d}", "digit": d}) + "\n" for d in range(10))
    )
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a fine prompt\ncaf\xe9 au lait\n")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1100})
            page.set_default_timeout(20_000)
            page.goto(stack.ui)
            b = Browser(page, stack)
            b.set_key(stack.key)
            b.tab("Datasets")
            b.wait_text("#tg-datasets", "No datasets yet")
            _upload(b, bad, "bad")
            b.wait_text("#tg-dataset-status", r"Not imported: .*row 2: undecodable text")
            assert "No datasets yet" in b.text("#tg-datasets")
            _upload(b, good, "digits-meta")
            b.wait_text("#tg-dataset-status", r"Imported #\d+ digits-meta: 10 rows")
            listing = b.wait_text("#tg-datasets", "digits-meta")
            assert "train 10" in listing and "digit" in listing
            with stack.api(stack.key) as api:
                made = api.get("/datasets").json()["data"][0]
                job = api.post(
                    "/jobs",
                    json={
                        "kind": "train",
                        "preset": "digits-treegrpo",
                        "config": {"prompts": {"dataset": "digits-meta"}},
                    },
                )
                assert job.status_code == 201, job.text
                job_id = job.json()["id"]
            page.locator("#tg-dataset-refresh").click()
            b.wait_text("#tg-datasets", rf"#{job_id}")  # where it is used
            page.locator("#tg-dataset-pick input").click()
            page.get_by_role("option", name=f"#{made['id']} digits-meta (10 rows)").click()
            b.fill("tg-dataset-search", "number 7")
            page.locator("#tg-dataset-preview").click()
            b.wait_text("#tg-dataset-count", "1 matching rows")
            assert '{"digit": 7}' in b.text("#tg-dataset-rows")
            b.shot("datasets-tab")
            page.locator("#tg-dataset-delete").click()
            b.wait_text("#tg-dataset-status", rf"Not deleted: .*job\(s\) {job_id}")
            with stack.api(stack.key) as api:
                assert api.post(f"/jobs/{job_id}/cancel").status_code == 200
                assert api.delete(f"/jobs/{job_id}").status_code in (200, 204)
            page.locator("#tg-dataset-delete").click()
            b.wait_text("#tg-dataset-status", rf"Deleted dataset #{made['id']}")
            b.wait_text("#tg-datasets", "No datasets yet")
        finally:
            browser.close()
    print(f"\nscreenshots: {ARTIFACTS}")
