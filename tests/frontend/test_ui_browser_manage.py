"""Issue 18's dashboard in Debian's Chromium against the real stack (as test_ui_browser.py), with
a training worker and an interactive-lane worker:

1. the Runs table is filled as the page opens (not at the first 3 s refresh), and no request of
   the page answers 404 (/favicon.ico, /manifest.json);
2. a k=4, d=4 tree (256 leaves, built with ui_factories.tree_json and written into the stack's
   database) is drawn on the canvas, timed from the click (a hang guard here; the targets are
   test_ui_tree_perf.py's), fitted with the root in view; a subtree folds and unfolds; the
   best-leaves filter lists five leaves with their paths;
3. run management: a running job cannot be deleted, a run is renamed and tagged, found by search
   and by tag, and another deleted with the in-page confirmation;
4. an 8-epoch run with `*_every` = 10 still has its gallery at epoch 8 (the Run tab's latest),
   the Run tab says no gallery is left to come, and its log tail opens at its end;
5. "branch again" while a training job runs: the training tree's caption (leaves, mean) and its
   nodes' places do not change, the children show in the overlay, which a toggle hides;
6. Compare sets the two runs' held-out galleries side by side at epoch 8 and charts their
   seconds per epoch by phase.
Screenshots go to tests/frontend/artifacts/ (or $UI_ARTIFACTS).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tree_page as tp
from test_ui_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, IN_CI, Browser
from ui_factories import tree_json
from ui_stack import Stack, seed_tree, start_stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not IN_CI,
        reason=f"{CHROMIUM} is missing (apt-get install chromium); required under CI=true",
    ),
]

# Two 8-epoch runs that log every 10 epochs: only the final epoch's gallery and tree say what
# the trained policy does. Small enough for a 2-core machine: 1 prompt per epoch, 6 steps.
SMALL = {
    "epochs": 8,
    "prompts_per_epoch": 1,
    "sampling.steps": 6,
    "sample_every": 10,
    "log_tree_every": 10,
    "checkpoint_every": 10,
    "eval_prompts": ["a handwritten digit 3", "a handwritten digit 7"],
}
TREE_RUN = {**SMALL, "tree.k": 2, "tree.depth": 2}
FLAT_RUN = {**SMALL, "algorithm": "dancegrpo", "flat.group_size": 4, "train.minibatches": 1}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("ui-stack-18"), interactive_worker=True)
    try:
        yield running
    finally:
        running.stop()


def _create(stack: Stack, name: str, preset: str, config: dict[str, Any]) -> int:
    with stack.api(stack.key) as api:
        answer = api.post(
            "/jobs", json={"kind": "train", "name": name, "preset": preset, "config": config}
        )
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"])


def test_ui_issue18_story(stack: Stack) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(20_000)
            b = Browser(page, stack)
            missing: list[str] = []
            page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
            try:
                _story(b, missing)
            except BaseException:
                b.shot("18-failure")
                print(stack.logs())
                raise
            b.assert_loopback_only()
        finally:
            browser.close()
    print(f"\nscreenshots: {ARTIFACTS}")


def _select(b: Browser, job_id: int) -> None:
    b.tab("Runs")
    b.page.locator(f"#tg-jobs tr[data-job-id='{job_id}']").click()
    b.wait_text("#tg-selected-job", f"#{job_id}")


def _story(b: Browser, missing: list[str]) -> None:
    page, stack = b.page, b.stack
    tree_run = _create(stack, "eight epochs tree", "digits-treegrpo", TREE_RUN)
    flat_run = _create(stack, "eight epochs flat", "digits-dancegrpo", FLAT_RUN)
    big_tree = tree_json(k=4, depth=4, steps=10, window_start=2, job_id=0)
    big = seed_tree(stack, big_tree, big_tree)  # logged at epochs 0 and 1

    # 1. The table is there before the first refresh tick (3 s), and nothing answers 404.
    started = time.monotonic()
    page.goto(stack.ui)
    b.wait_text("#tg-jobs", "seeded big tree", timeout=10)
    shown_after = time.monotonic() - started
    print(f"\nRuns table filled {shown_after:.2f} s after the page was asked for")
    page.wait_for_timeout(1000)
    assert not missing, f"404s: {missing}"
    b.set_key(stack.key)
    # The form shows the tree fields for TreeGRPO, the flat group size for DanceGRPO.
    page.wait_for_function(
        "() => document.querySelector('#tg-f-epochs input')?.value === '100'", timeout=30_000
    )
    assert page.locator("#tg-f-tree-k").is_visible()
    assert not page.locator("#tg-f-flat-group-size").is_visible()
    page.locator("#tg-preset input").click()
    page.get_by_role("option", name="digits-dancegrpo", exact=True).click()
    page.wait_for_function("() => !document.querySelector('#tg-f-tree-k')?.checkVisibility()")
    assert page.locator("#tg-f-flat-group-size").is_visible()

    # 2. The 256-leaf trees: drawn on the canvas, fitted with the root centred.
    _select(b, big)
    page.get_by_role("button", name="Open trees").click()
    tp.arm(page)  # the tab may have drawn it while hidden (the job's pick loads it)
    tp.wait_drawn(page, None, timeout=60, since_click=False)
    assert tp.hook(page, "state")["leaves"] == 256
    # The other one ("older ▶"), timed from the click: drawn and clickable, then complete.
    before = str(tp.hook(page, "state")["tree"])
    tp.arm(page)
    page.locator("#tg-tree-older").click()
    timed = tp.wait_drawn(page, before, timeout=60)
    drawn = int(timed["nodes"])
    print(
        f"k=4, d=4 tree ({drawn} drawn nodes): drawn in {timed['drawn'] * 1000:.0f} ms, "
        f"every tile in {timed['complete'] * 1000:.0f} ms"
    )
    # The issue's target is 1 s, held by the serial test_ui_tree_perf.py; this is a hang guard
    # on a shared machine with two trainings running.
    assert timed["drawn"] < 15, f"the big tree took {timed['drawn']:.2f} s to draw"
    root_id = tp.hook(page, "root")
    point = tp.hook(page, "pos", root_id)
    box = page.locator("#tg-tree canvas").bounding_box()
    assert box["x"] < point["x"] < box["x"] + box["width"], "the root is not in view"
    assert box["y"] < point["y"] < box["y"] + box["height"], "the root is not in view"
    b.shot("18-big-tree")
    # Fold the first branching node's subtree, then unfold it.
    top = tp.ids(page, tp.FOLD)[0]
    tp.hook(page, "fold", top)
    hidden = drawn - len(tp.ids(page))
    assert hidden >= drawn - 3, f"only {hidden} of {drawn} nodes folded away"
    tp.hook(page, "fold", top)
    assert len(tp.ids(page)) == drawn
    # The best leaves and their paths; the rest of the tree is dimmed.
    page.locator("#tg-tree button[data-filter='best']").click()
    best = page.locator("#tg-tree .tg-rank-best li")
    assert best.count() == 5 and best.first.is_visible()
    assert "reward 1.000" in best.first.inner_text() and "step 0 →" in best.first.inner_text()
    assert tp.hook(page, "dimmed") > drawn - 20
    b.shot("18-big-tree-best")

    # 3. Run management: rename and tag a run.
    _select(b, tree_run)
    page.locator("#tg-manage").get_by_text("Name, tags and notes").click()
    page.wait_for_function(
        "() => document.querySelector('#tg-edit-name textarea, #tg-edit-name input')?.value"
        " === 'eight epochs tree'"
    )
    b.fill("tg-edit-name", "renamed tree run")
    b.fill("tg-edit-tags", "keep, digits")
    b.fill("tg-edit-notes", "the one to keep")
    page.locator("#tg-save").click()
    b.wait_text("#tg-action-msg", "saved")
    row = f"#tg-jobs tr[data-job-id='{tree_run}']"
    b.wait_text(row, "renamed tree run")
    b.wait_text(row, "keep")
    # Search by name, then by tag.
    only_it = f"""() => {{ const rows = document.querySelectorAll('#tg-jobs tr[data-job-id]');
        return rows.length === 1 && rows[0].dataset.jobId === '{tree_run}'; }}"""
    b.fill("tg-search", "renamed")
    page.wait_for_function(only_it)
    b.fill("tg-search", "")
    b.wait_text("#tg-jobs", "seeded big tree")
    b.fill("tg-tag-filter", "keep")
    page.wait_for_function(only_it)
    b.shot("18-runs-search")
    b.fill("tg-tag-filter", "")
    b.wait_text("#tg-jobs", "seeded big tree")
    # Delete the finished seeded run, with the confirmation.
    _select(b, big)
    page.locator("#tg-delete").click()
    b.wait_text("#tg-confirm", f"Delete job #{big}")
    page.get_by_role("button", name="Yes, do it").click()
    b.wait_text("#tg-action-msg", f"Job #{big} was deleted")
    page.wait_for_function(f"() => !document.querySelector(\"#tg-jobs tr[data-job-id='{big}']\")")
    with stack.api() as api:
        assert api.get(f"/jobs/{big}").status_code == 404

    # 4. The 8-epoch run's gallery at epoch 8; nothing left to come; the log at its end.
    stack.wait_job(tree_run, {"succeeded"}, timeout=400)
    _select(b, tree_run)
    page.get_by_role("button", name="Open in Run").click()
    b.wait_text("#tg-run-header", "succeeded")
    b.wait_text("#tg-gallery-latest", "Epoch 8")
    b.wait_text("#tg-run-header", "none left")
    b.tab("Runs")
    b.tab("Run")  # the log was filled while hidden: it must still open at its end
    page.wait_for_function(
        """() => { const p = document.querySelector('#tg-log pre.tg-log');
                   return p && p.scrollHeight > p.clientHeight + 50
                     && p.scrollTop + p.clientHeight >= p.scrollHeight - 4; }"""
    )
    b.shot("18-run")
    # Gallery captions wrap instead of being cut ("a picture of t...").
    cut = page.evaluate(
        """() => [...document.querySelectorAll('#tg-gallery-latest .tg-prompt')]
             .filter((p) => p.scrollWidth > p.clientWidth + 1).length"""
    )
    assert cut == 0, f"{cut} gallery captions are cut"

    # 5. Branch again while a long training job runs (the branch has its own lane).
    stack.wait_job(flat_run, {"succeeded"}, timeout=400)
    long_run = _create(stack, "long run", "digits-treegrpo", {"epochs": 50, "prompts_per_epoch": 2})
    stack.wait_job(long_run, {"running"}, timeout=120)
    b.tab("Tree inspector")
    page.wait_for_function(
        f"() => document.querySelector('{tp.VIEW}')?.dataset.treeId"
        f" && document.querySelector('#tg-tree-job input')?.value.includes('#{tree_run}')"
    )
    caption = b.text("#tg-tree .tg-tree-caption")
    places = tp.hook(page, "places")
    leaves = set(tp.ids(page, tp.LEAF))
    inner_id = [i for i in tp.ids(page) if i not in leaves][-1]
    tp.click_node(page, inner_id)
    b.wait_text(f".tg-panel[data-node-id='{inner_id}'] td[data-field='leaf']", "no")
    asked = time.monotonic()
    page.locator("#tg-branch").click()
    b.wait_text("#tg-branch-msg", r"Branch job #\d+")
    page.wait_for_function(
        f"() => document.querySelector('{tp.VIEW}').tgTree.ids({tp.BRANCH | tp.NEW}).length",
        timeout=120_000,
    )
    took = time.monotonic() - asked
    during = stack.job(long_run)["status"]
    print(f"branch children shown {took:.1f} s after the click, while job {long_run} was {during}")
    assert during == "running"
    b.wait_text("#tg-branch-msg", "new children")
    b.shot("18-tree-branched")
    assert b.text("#tg-tree .tg-tree-caption").split(" · plus")[0] == caption
    assert tp.hook(page, "places") == places, "the training tree moved"
    assert len(tp.ids(page, tp.BRANCH)) >= 2
    page.locator("#tg-tree input[data-overlay]").uncheck()
    assert tp.ids(page, tp.BRANCH) == []
    page.locator("#tg-tree input[data-overlay]").check()
    assert len(tp.ids(page, tp.BRANCH)) >= 2
    # A running job cannot be deleted (cancel it first).
    _select(b, long_run)
    page.locator("#tg-delete").click()
    b.wait_text("#tg-action-msg", "cancel it first")

    with stack.api(stack.key) as api:
        api.post(f"/jobs/{long_run}/cancel")
        stack.wait_job(long_run, {"cancelled"}, timeout=120)
        assert api.delete(f"/jobs/{long_run}").status_code == 204  # out of Compare's choices

    # 6. Compare: the two runs' galleries at epoch 8, side by side; seconds per phase.
    b.tab("Compare")
    b.page.locator("#tg-compare-runs input").click()
    for job_id in (tree_run, flat_run):
        if not re.search(f"#{job_id} ", b.text("#tg-compare-runs")):
            page.get_by_role("option", name=re.compile(f"^#{job_id} ")).click()
    page.keyboard.press("Escape")
    page.locator("#tg-compare-table").click(position={"x": 5, "y": 5})
    page.wait_for_selector("#tg-side-by-side[data-epoch='8']", timeout=30_000)
    heads = page.locator("#tg-side-by-side .tg-sbs-run[data-job-id]")
    assert {heads.nth(i).get_attribute("data-job-id") for i in range(heads.count())} >= {
        str(tree_run),
        str(flat_run),
    }
    assert page.locator("#tg-side-by-side img").count() >= 2 * 2
    assert page.locator("#tg-side-by-side[data-same='1']").count() == 1
    page.wait_for_selector("#tg-phase-chart rect.phase")
    b.shot("18-compare")

    # A flat run has no tree: the inspector says so and Branch is disabled. The Runs table
    # still lists the long run, deleted through the API, until the tab's refresh: a click before
    # that lands on the row that moves up into the clicked place.
    b.tab("Runs")
    page.wait_for_function(
        f"() => !document.querySelector(\"#tg-jobs tr[data-job-id='{long_run}']\")"
    )
    _select(b, flat_run)
    page.get_by_role("button", name="Open trees").click()
    b.wait_text("#tg-tab-tree", "grow no tree")
    page.wait_for_function("() => document.querySelector('#tg-branch')?.disabled === true")

    # 7. Playground: one prompt and seed, the base model beside the run's last checkpoint.
    b.tab("Playground")
    page.locator("#tg-play-refresh").click()
    page.locator("#tg-play-run input").click()
    page.get_by_role("option", name=re.compile(f"^#{tree_run} ")).click()
    b.fill("tg-play-prompt", "a handwritten digit three")
    page.locator("#tg-play-go").click()
    page.wait_for_selector("#tg-play-result", timeout=90_000)
    titles = page.locator("#tg-play-result .tg-gallery-title").all_inner_texts()
    assert len(titles) == 2, titles
    assert titles[0].startswith("Base model, mean reward"), titles
    assert titles[1].startswith("Checkpoint of epoch 8, mean reward"), titles
    assert page.locator("#tg-play-result img").count() == 2 * 4
    b.wait_text("#tg-play-status", "finished in")
    b.shot("18-playground")
    assert not missing, f"404s: {missing}"
