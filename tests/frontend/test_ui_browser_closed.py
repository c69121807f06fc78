"""The dashboard on a closed studio (TREEGRPO_READS_REQUIRE_KEY=true, the compose default): without
a key it says plainly that reads need one and shows no run; with the pasted key every read goes
with it and the runs appear. Skipped only when /usr/bin/chromium is missing and CI is not true."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def _open_run_with_key(browser: Any, stack: Stack, job_id: int, name: str) -> Any:
    """A page (downloads accepted) with the stack's key pasted and job `job_id`, listed as
    `name`, opened in the Run tab by a double click on its row."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    page.set_default_timeout(20_000)
    page.goto(stack.ui)
    page.wait_for_selector("#tg-key-note .tg-key-status:not(.tg-key-pending)")
    field = page.locator("#tg-api-key textarea, #tg-api-key input").first
    field.fill(stack.key)
    field.dispatch_event("blur")
    _wait_text(page, "#tg-key-note", "reads included")
    page.get_by_role("tab", name="Runs", exact=True).click()
    _wait_text(page, "#tg-jobs", name)
    page.locator(f"#tg-jobs tr[data-job-id='{job_id}']").dblclick()
    return page


def test_the_run_tabs_downloads_work_on_a_closed_studio(closed: Stack) -> None:
    """The Run header's checkpoint and LoRA links, as the page renders them for the pasted key,
    open with no key at all (the UI serves them: frontend/links.py), while the API's own URL
    answers 401; the browser saves the zip under the API's file name."""
    import io
    import zipfile
    from urllib.parse import urljoin

    import httpx
    from playwright.sync_api import sync_playwright
    from ui_stack import seed_checkpoint

    job_id, folder = seed_checkpoint(closed, name="closed lora run")
    with closed.api() as anonymous:
        assert anonymous.get(f"/jobs/{job_id}/checkpoint").status_code == 401
        assert anonymous.get(f"/jobs/{job_id}/export", params={"format": "lora"}).status_code == 401

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = _open_run_with_key(browser, closed, job_id, "closed lora run")
            _wait_text(page, "#tg-run-header", "Download the LoRA for diffusers")
            hrefs = {
                name: str(page.locator(f"[data-testid='{name}-link']").get_attribute("href"))
                for name in ("checkpoint", "export")
            }
            assert all(href.startswith("files/") for href in hrefs.values()), hrefs
            assert not any(closed.key in href for href in hrefs.values())
            with page.expect_download() as saving:
                page.locator("[data-testid='checkpoint-link']").click()
            saved = saving.value
            assert saved.suggested_filename == f"job-{job_id}-epoch-000002.zip"
            with zipfile.ZipFile(saved.path()) as archive:
                assert (
                    archive.read("model.safetensors") == (folder / "model.safetensors").read_bytes()
                )
            page_url = page.url
        finally:
            browser.close()

    # The same hrefs, fetched with no key and no cookie: the token alone opens the file.
    with httpx.Client(timeout=30) as bare:
        answer = bare.get(urljoin(page_url, hrefs["checkpoint"]))
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(answer.content))
        assert sorted(archive.namelist()) == [
            "lora/README.md",
            "lora/pytorch_lora_weights.safetensors",
            "model.safetensors",
            "state.json",
        ]
        assert archive.read("state.json") == (folder / "state.json").read_bytes()
        export = bare.get(urljoin(page_url, hrefs["export"]))
        assert export.status_code == 200, export.text
        assert f"job-{job_id}-epoch-000002-lora.zip" in export.headers["content-disposition"]
        lora = zipfile.ZipFile(io.BytesIO(export.content))
        assert (
            lora.read("pytorch_lora_weights.safetensors")
            == (folder / "lora" / "pytorch_lora_weights.safetensors").read_bytes()
        )


LINK_TTL_S = 5


@pytest.fixture(scope="module")
def short_links(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("ui-short-links"),
        worker=False,
        reads_require_key=True,
        settings={"TREEGRPO_LINK_TTL_SECONDS": str(LINK_TTL_S)},
    )
    try:
        yield running
    finally:
        running.stop()


def test_an_expired_download_link_says_so_and_is_renewed(short_links: Stack) -> None:
    """A download link clicked after its lifetime used to fail without a word (a failed
    download in the browser's list). The page now says it expired, the Run header gets fresh
    links, and the next click downloads."""
    from playwright.sync_api import sync_playwright
    from ui_stack import seed_checkpoint

    stack = short_links
    job_id, folder = seed_checkpoint(stack, name="old links run")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = _open_run_with_key(browser, stack, job_id, "old links run")
            _wait_text(page, "#tg-run-header", "Download the latest checkpoint")
            link = page.locator("[data-testid='checkpoint-link']")
            old = link.get_attribute("href")
            page.wait_for_timeout((LINK_TTL_S + 1) * 1000)
            link.click()
            toast = page.locator(".tg-link-expired")
            toast.wait_for()
            assert "This link has expired (links last 5 seconds)" in toast.inner_text()
            assert "click again" in toast.inner_text()
            page.wait_for_function(
                "(old) => { const a = document.querySelector(\"[data-testid='checkpoint-link']\");"
                " return a && a.getAttribute('href') !== old; }",
                arg=old,
            )
            with page.expect_download() as saving:
                page.locator("[data-testid='checkpoint-link']").click()
            saved = saving.value
            assert saved.failure() is None
            assert saved.suggested_filename == f"job-{job_id}-epoch-000002.zip"
            assert Path(saved.path()).stat().st_size > (folder / "model.safetensors").stat().st_size
        finally:
            browser.close()
