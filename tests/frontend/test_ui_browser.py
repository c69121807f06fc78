"""The dashboard in Debian's Chromium (Playwright) against the real stack: the API with the UI
mounted at /ui, a worker on the embedded filesystem transport, and the shipped digits model.

One test drives the whole story on one stack (starting it costs ~15 s of a 2-core machine, and
pytest-xdist would start one per worker if the steps were separate tests):
1. without a key, then with a wrong key, a submit from the form creates no job and says why;
2. with the key, a run submitted from the form (name and prompt `<img src=x onerror=alert(1)>`)
   and its reward curve grows in the Run tab without a page reload;
3. the Tree inspector draws a 27-leaf tree with thumbnails (timed, < 1 s), a click on a leaf shows
   its reward in the panel, "branch again" brings new children;
4. the Compare tab overlays the run;
5. a running job is cancelled from the Runs tab (with the in-page confirmation);
and throughout: the XSS text shows as text in every tab, no dialog fires, and every request the
browser makes goes to the loopback interface. Screenshots of each tab go to
tests/frontend/artifacts/ (or $UI_ARTIFACTS); the path is printed.

Skipped only when /usr/bin/chromium is missing and CI is not true.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import tree_page as tp
from ui_stack import CHROMIUM, CHROMIUM_ARGS, Stack, start_stack

XSS = "<img src=x onerror=alert(1)>"
IN_CI = os.environ.get("CI", "").strip().lower() == "true"
ARTIFACTS = Path(os.environ.get("UI_ARTIFACTS") or Path(__file__).parent / "artifacts")
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not IN_CI,
        reason=f"{CHROMIUM} is missing (apt-get install chromium); required under CI=true",
    ),
]

# The smallest run that still shows everything: 3 epochs of 2 prompts, 27-leaf trees (k=3, d=3)
# over 6 steps, a tree and a gallery every epoch. The reward is prompt-free (boldness): the
# digit judge needs a digit in the prompt, and this prompt is the XSS probe.
RUN_FIELDS = {
    "tg-f-epochs": "3",
    "tg-f-prompts-per-epoch": "2",
    "tg-f-sampling-steps": "6",
    "tg-f-tree-k": "3",
    "tg-f-tree-depth": "3",
    "tg-f-log-tree-every": "1",
    "tg-f-sample-every": "1",
    "tg-f-checkpoint-every": "1",
    "tg-f-reward": "boldness",
    "tg-f-prompts": XSS,
    "tg-advanced": 'eval_prompts = ["<img src=x onerror=alert(1)>"]',
    "tg-name": XSS,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("ui-stack"))
    try:
        yield running
    finally:
        running.stop()


class Browser:
    """One Chromium page with the checks every step shares."""

    def __init__(self, page: Any, stack: Stack) -> None:
        self.page = page
        self.stack = stack
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.console_errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("request", lambda r: self.requests.append(r.url))
        page.on(
            "console",
            lambda m: self.console_errors.append(m.text) if m.type == "error" else None,
        )

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name, exact=True).click()

    def fill(self, elem_id: str, value: str) -> None:
        field = self.page.locator(f"#{elem_id} textarea, #{elem_id} input").first
        field.fill(value)
        field.dispatch_event("blur")

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).inner_text())

    def wait_text(self, selector: str, pattern: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            loc = self.page.locator(selector)
            seen = loc.inner_text() if loc.count() else ""
            if re.search(pattern, seen):
                return seen
            self.page.wait_for_timeout(200)
        raise AssertionError(f"{selector} never matched {pattern!r}; last text: {seen!r}")

    def set_key(self, key: str) -> None:
        # The page's load event writes the note once; a key typed before it answers would race it.
        self.page.wait_for_selector("#tg-key-note .tg-key-status:not(.tg-key-pending)")
        self.fill("tg-api-key", key)
        self.wait_text("#tg-key-note", re.escape(f"…{key[-4:]}") if len(key) >= 12 else "set")

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def assert_xss_inert(self, where: str) -> None:
        """The probe is on the page as text, never as an element; no dialog fired."""
        assert self.page.locator("img[src='x']").count() == 0, f"{where}: an <img src=x> exists"
        assert self.page.get_by_text(XSS).count() > 0, f"{where}: the XSS text is not shown"
        assert not self.dialogs, f"{where}: dialogs fired: {self.dialogs}"

    def assert_loopback_only(self) -> None:
        hosts = {urlsplit(u).hostname for u in self.requests if u.startswith(("http", "ws"))}
        assert hosts <= LOOPBACK, f"requests beyond the machine: {hosts - LOOPBACK}"
        assert self.requests, "no request recorded"


def _submit_is_refused(b: Browser, key: str | None, pattern: str) -> None:
    before = b.stack.job_count()
    if key is not None:
        b.set_key(key)
    b.page.locator("#tg-submit").click()
    b.wait_text("#tg-form-msg", pattern)
    time.sleep(0.5)
    assert b.stack.job_count() == before, "a job was created"


def _reward_points(b: Browser) -> int:
    chart = b.page.locator("#tg-reward-charts svg[data-chart$=':epoch']").first
    return int(chart.get_attribute("data-points") or 0) if chart.count() else 0


def _timed_tree(
    b: Browser, act: Callable[[], None], before: str | None, *, since_click: bool = True
) -> tuple[float, int]:
    """Seconds from the user's click (the first click event after arming, on the browser's
    clock: Playwright's own overhead before it is not counted) until a tree other than `before`
    is drawn with every tile of its atlas; and how many tiles it has."""
    tp.arm(b.page)
    act()
    timed = tp.wait_drawn(b.page, before, since_click=since_click)
    return float(timed["complete"]), int(timed["tiles"])


def _pick_tree(b: Browser, option_index: int) -> str:
    b.page.locator("#tg-tree-pick input").click()
    option = b.page.get_by_role("option").nth(option_index)
    label = str(option.inner_text()).replace("✓", "").strip()
    option.click()
    return label


def test_ui_browser_end_to_end(stack: Stack) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(20_000)
            b = Browser(page, stack)
            try:
                _story(b)
            except BaseException:
                b.shot("failure")
                print(stack.logs())
                raise
            b.assert_loopback_only()
            assert not b.dialogs, b.dialogs
        finally:
            browser.close()
    print(f"\nscreenshots: {ARTIFACTS}")


def _story(b: Browser) -> None:
    page, stack = b.page, b.stack
    page.goto(stack.ui)
    page.evaluate("() => { window.__noReload = true; }")
    # The form is filled from GET /presets (digits-treegrpo: 100 epochs) once the page loads.
    page.wait_for_function(
        "() => document.querySelector('#tg-f-epochs input')?.value === '100'", timeout=30_000
    )
    b.wait_text("#tg-jobs", "No jobs|jobs?")  # reads work without a key

    # 1. No key, then a wrong key: nothing is created and the form says why.
    for elem_id, value in RUN_FIELDS.items():
        b.fill(elem_id, value)
    _submit_is_refused(b, None, "API key is needed")
    _submit_is_refused(b, "tgk_this-is-not-a-valid-key-0000", "refused the key")

    # 2. The real key. A value only the API can judge (k=1: the core wants k >= 2) comes back as
    # a 422 whose message shows under its field; nothing is created.
    b.set_key(stack.key)
    b.fill("tg-f-tree-k", "1")
    before = stack.job_count()
    page.locator("#tg-submit").click()
    b.wait_text("#tg-f-tree-k-error", ">= 2")
    b.wait_text("#tg-form-msg", "refused these values")
    assert stack.job_count() == before
    b.shot("0-form-422")
    # Corrected, the run is created and its curve grows live.
    b.fill("tg-f-tree-k", "3")
    page.locator("#tg-submit").click()
    created = b.wait_text("#tg-form-msg", r"Created job #\d+")
    job_id = int(re.search(r"#(\d+)", created).group(1))  # type: ignore[union-attr]
    b.wait_text("#tg-jobs", re.escape(XSS))
    b.assert_xss_inert("Runs tab")
    b.shot("1-runs")

    # A double click on its row opens the job in the Run tab.
    page.locator(f"#tg-jobs tr[data-job-id='{job_id}']").dblclick()
    page.wait_for_function(
        """() => [...document.querySelectorAll('[role=tab]')].some(
          (t) => t.textContent.trim() === 'Run' && t.getAttribute('aria-selected') === 'true')"""
    )
    b.wait_text("#tg-run-header", re.escape(XSS))
    counts: list[int] = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        points = _reward_points(b)
        if not counts or points != counts[-1]:
            counts.append(points)
        if stack.job(job_id)["status"] == "succeeded" and points >= 6:
            break
        page.wait_for_timeout(400)
    job = stack.job(job_id)
    assert job["status"] == "succeeded", f"{job['status']}: {job.get('error')}"
    # Training reward at epochs 1..3 plus the held-out gallery at 0..3, seen arriving in steps.
    assert counts[-1] >= 7 - 1, counts
    assert len([c for c in counts if c > 0]) >= 3, f"the curve did not grow live: {counts}"
    assert counts == sorted(counts), counts
    assert page.evaluate("() => window.__noReload === true"), "the page reloaded"
    b.wait_text("#tg-run-header", "succeeded")
    b.wait_text("#tg-run-header", "Download the latest checkpoint")
    b.wait_text("#tg-gallery-baseline", "baseline")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#tg-gallery-latest img')].length > 0"
    )
    b.assert_xss_inert("Run tab")
    print(f"\nreward chart points seen in the Run tab as the job ran: {counts}")
    b.shot("2-run")

    # 3. Tree inspector: timed renders, a leaf's reward, branch again.
    # (The tab may have drawn the run's tree while hidden: that counts as drawn at once.)
    first, images = _timed_tree(b, lambda: b.tab("Tree inspector"), None, since_click=False)
    print(f"newest tree drawn on opening the tab ({images} thumbnails): {first * 1000:.0f} ms")
    assert tp.hook(page, "state")["leaves"] == 27
    tree_id = int(tp.hook(page, "state")["tree"])
    with stack.api() as api:
        tree = api.get(f"/trees/{tree_id}").json()
    leaf_id = tp.ids(page, tp.LEAF)[4]
    expected = next(n for n in tree["nodes"] if n["id"] == leaf_id)
    tp.click_node(page, leaf_id)
    shown = b.wait_text(f".tg-panel[data-node-id='{leaf_id}'] td[data-field='reward']", r"\d")
    assert shown == f"{expected['reward']:.4f}", (shown, expected["reward"])
    assert tp.hook(page, "state")["selected"] == leaf_id
    b.wait_text("#tg-node-panel", "Path from the root")
    b.assert_xss_inert("Tree tab")
    b.shot("3-tree")

    # The next older tree of the run ("older ▶"): the figure the issue asks for.
    elapsed, images = _timed_tree(b, lambda: page.locator("#tg-tree-older").click(), str(tree_id))
    label = page.locator("#tg-tree-pick input").input_value()
    print(f"27-leaf tree ({images} thumbnails, '{label}') rendered in {elapsed * 1000:.0f} ms")
    assert tp.hook(page, "state")["leaves"] == 27
    # A guard against a hang, not the target: timings are measured, not asserted, and this test
    # shares the CPU with another xdist worker and a training job (the < 0.5 s figure is held
    # by the serial test_ui_tree_perf.py). At a load average of 20 on 2 cores it measured 7.3 s.
    assert elapsed < 15.0, f"the tree took {elapsed:.2f} s"
    # Picking from the list works too (timed for the record: Gradio's dropdown adds its own).
    current = str(tp.hook(page, "state")["tree"])
    picked, _ = _timed_tree(b, lambda: _pick_tree(b, 2), current)
    print(f"another tree picked from the list: {picked * 1000:.0f} ms")

    # A leaf has no step left: "Branch again" is disabled and the page says why (the API's
    # branch_refusal), so no job that would fail can be submitted.
    tp.click_node(page, tp.ids(page, tp.LEAF)[0])
    b.wait_text("#tg-node-panel td[data-field='leaf']", "yes")
    page.wait_for_function("() => document.querySelector('#tg-branch')?.disabled === true")
    b.wait_text("#tg-branch-why", "no denoising steps left")
    # The last inner node drawn is at the end of the SDE window: its children regrow the tail.
    leaves = set(tp.ids(page, tp.LEAF))
    inner_id = [i for i in tp.ids(page) if i not in leaves][-1]
    tp.click_node(page, inner_id)
    b.wait_text(f".tg-panel[data-node-id='{inner_id}'] td[data-field='leaf']", "no")
    page.locator("#tg-branch").click()
    b.wait_text("#tg-branch-msg", r"Branch job #\d+")
    page.wait_for_function(
        f"() => document.querySelector('{tp.VIEW}').tgTree.ids({tp.NEW}).length >= 3",
        timeout=90_000,
    )
    b.wait_text("#tg-branch-msg", "new children")
    new = len(tp.ids(page, tp.NEW))
    assert new >= 3, f"{new} new nodes drawn"
    b.shot("4-tree-branched")

    # 4. Compare: the run's curves against wall-clock and images seen, with its table row.
    b.tab("Compare")
    b.wait_text("#tg-compare-table", re.escape(XSS))
    page.wait_for_function(
        "() => Number(document.querySelector('#tg-compare svg[data-chart=wall_clock]')"
        "?.getAttribute('data-points') || 0) > 0"
    )
    b.assert_xss_inert("Compare tab")
    b.shot("5-compare")

    # 5. Cancel a running job from the Runs tab.
    with stack.api(stack.key) as api:
        long_job = api.post(
            "/jobs",
            json={
                "kind": "train",
                "name": "long run to cancel",
                "preset": "digits-treegrpo",
                "config": {"epochs": 50, "prompts_per_epoch": 2, "sampling.steps": 6},
            },
        ).json()
    long_id = int(long_job["id"])
    stack.wait_job(long_id, {"running"}, timeout=120)
    b.tab("Runs")
    page.locator(f"#tg-jobs tr[data-job-id='{long_id}']").click()
    b.wait_text("#tg-selected-job", f"#{long_id}")
    page.get_by_role("button", name="Cancel run…").click()
    b.wait_text("#tg-confirm", f"Cancel job #{long_id}")
    page.get_by_role("button", name="Yes, do it").click()
    b.wait_text("#tg-action-msg", f"Cancel requested. Job #{long_id} (is stopping|was cancelled)")
    stack.wait_job(long_id, {"cancelled"}, timeout=90)
    b.wait_text(f"#tg-jobs tr[data-job-id='{long_id}']", "cancelled", timeout=15)
    # The notice follows the job (it no longer says "cancelling" once it is cancelled), and so
    # does the form's "Created job" notice of the first run.
    b.wait_text("#tg-action-msg", f"Job #{long_id} was cancelled", timeout=15)
    b.wait_text("#tg-form-msg", f"Created job #{job_id} .*Job #{job_id} has succeeded")
    b.assert_xss_inert("Runs tab (end)")
    b.shot("6-runs-cancelled")
