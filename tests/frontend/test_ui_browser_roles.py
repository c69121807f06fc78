"""Roles in the dashboard (issue 23), in Debian's Chromium against the real API: the Runs table
shows each run's owner; a member sees Cancel, Resume, Delete and Save disabled on another
member's run, with the reason, and enabled on its own; a viewer's Submit is disabled with the
reason; the pasted key is never written to the browser's storage. Screenshots go to
tests/frontend/artifacts/ (or $UI_ARTIFACTS). Skipped only when /usr/bin/chromium is missing and
CI is not true."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_ui_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, IN_CI, Browser
from ui_factories import tree_json
from ui_stack import Stack, add_key, seed_tree, start_stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not IN_CI,
        reason=f"{CHROMIUM} is missing (apt-get install chromium); required under CI=true",
    ),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("ui-roles"), worker=False)
    try:
        yield running
    finally:
        running.stop()


def _submit(stack: Stack, key: str, name: str) -> int:
    with stack.api(key) as api:
        made = api.post("/jobs", json={"kind": "train", "name": name, "preset": "tiny-treegrpo"})
        assert made.status_code == 201, made.text
        return int(made.json()["id"])


def _pick(b: Browser, job_id: int) -> None:
    b.page.locator(f'#tg-jobs tr[data-job-id="{job_id}"]').click()
    b.wait_text("#tg-selected-job", f"#{job_id}")


def _enabled(b: Browser, name: str) -> bool:
    return bool(b.page.get_by_role("button", name=name, exact=True).is_enabled())


def _storage(page: Any) -> str:
    return str(page.evaluate("JSON.stringify([localStorage, sessionStorage])"))


def test_owners_show_and_actions_follow_the_role(stack: Stack) -> None:
    from playwright.sync_api import sync_playwright

    alice = add_key(stack.env, "alice", "member")
    bob = add_key(stack.env, "bob", "member")
    vera = add_key(stack.env, "vera", "viewer")
    alices = _submit(stack, alice, "alice-run")
    bobs = _submit(stack, bob, "bob-run")
    # A finished run with a tree, written as rows (no owner: as if made before roles).
    old = seed_tree(stack, tree_json(k=2, depth=2, steps=4, window_start=0, job_id=0))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1100})
            page.set_default_timeout(20_000)
            page.goto(stack.ui)
            b = Browser(page, stack)
            b.wait_text("#tg-key-note", "No key: read-only")  # the page's load event is done
            b.set_key(bob)
            b.wait_text("#tg-key-note", r"Key bob, role member")
            row = b.wait_text(f'#tg-jobs tr[data-job-id="{alices}"]', "alice-run")
            assert re.search(r"\balice\b", row.split("alice-run", 1)[1]), row  # the owner column

            _pick(b, alices)
            reason = b.wait_text("#tg-permission", "belongs to key 'alice'")
            assert "a member manages only its own runs" in reason
            page.get_by_text("Name, tags and notes of the selected run").click()  # the accordion
            for name in ("Cancel run…", "Resume run…", "Delete run…", "Save name, tags and notes"):
                assert not _enabled(b, name), name
            b.shot("roles-member-other-run")

            _pick(b, old)
            b.wait_text("#tg-permission", "no key \\(it predates roles\\)")
            assert not _enabled(b, "Delete run…")

            _pick(b, bobs)
            b.wait_text("#tg-permission", "^$")
            assert _enabled(b, "Cancel run…") and _enabled(b, "Delete run…")
            assert _enabled(b, "Submit run")

            b.set_key(vera)
            b.wait_text("#tg-key-note", r"Key vera, role viewer")
            b.wait_text("#tg-submit-refusal", "is a viewer: it reads only")
            assert not _enabled(b, "Submit run")
            b.shot("roles-viewer")
            # Branching is submitting: the viewer's Branch button is disabled too, with why.
            _pick(b, old)
            page.get_by_role("button", name="Open trees").click()
            page.wait_for_function(
                "() => document.querySelector('#tg-tree .tg-tree-view')?.dataset.treeId"
            )
            b.wait_text("#tg-branch-msg", "is a viewer: it reads only")
            assert not page.locator("#tg-branch").is_enabled()

            for key in (alice, bob, vera):
                assert key not in _storage(page)
            assert not b.dialogs
            b.assert_loopback_only()
        finally:
            browser.close()
    print(f"screenshots: {ARTIFACTS}/roles-*.png")
    assert stack.job(alices)["status"] == "queued" and stack.job(bobs)["status"] == "queued"
