"""An evaluate job's table in the dashboard, in Debian's Chromium against the real stack (as
test_ui_browser.py): a short digits run with an EMA, whose config names three eval rewards
(digit_judge, boldness, contrast) apart from its training reward, makes a checkpoint; the Run
tab's "Evaluate against the base model" creates the evaluate job, which compares the base model
with that checkpoint on held-out prompts; the Run tab then shows its table, models x rewards with
mean ± interval, whose numbers are the API's. The same comparison made through the API with the
eval-digits preset has the same numbers (the same fixed noises). The screenshot goes to
docs/images/dashboard-evaluation.png (and tests/frontend/artifacts/).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "dashboard-evaluation.png"
EVAL_REWARDS = ["boldness", "contrast", "digit_judge"]
# Small enough for a 2-core machine: 4 epochs of one 4-leaf tree over 6 steps, an EMA of every
# optimizer step, one checkpoint at the end; its evaluation: 10 held-out prompts x 2 images.
TRAIN = {
    "epochs": 4,
    "prompts_per_epoch": 1,
    "sampling.steps": 6,
    "tree.k": 2,
    "tree.depth": 2,
    "sample_every": 0,
    "log_tree_every": 0,
    "checkpoint_every": 0,
    "train.ema": True,
    "train.ema_every": 1,
    "eval_prompts": "digits-heldout",
    "eval.rewards": {"digit_judge": 1.0, "boldness": 1.0, "contrast": 1.0},
    "eval.images_per_prompt": 2,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("ui-stack-eval"))
    try:
        yield running
    finally:
        running.stop()


def _create(stack: Stack, body: dict[str, Any]) -> int:
    with stack.api(stack.key) as api:
        answer = api.post("/jobs", json=body)
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"])


def _means(stack: Stack, job_id: int) -> dict[tuple[int, str], float]:
    """(row, reward) -> mean, as the API serves the evaluate job's metric points."""
    with stack.api() as api:
        points = api.get(f"/jobs/{job_id}/metrics").json()["data"]
    return {
        (p["step"], p["name"].split("/")[1]): p["value"]
        for p in points
        if p["name"].startswith("evaluation/") and p["name"].endswith("/mean")
    }


def test_ui_evaluation_table(stack: Stack) -> None:
    from playwright.sync_api import sync_playwright

    trained = _create(
        stack,
        {"kind": "train", "name": "short digits run", "preset": "digits-treegrpo", "config": TRAIN},
    )
    stack.wait_job(trained, {"succeeded"}, timeout=400)
    by_api = _create(
        stack,
        {
            "kind": "evaluate",
            "name": "base vs checkpoint (API)",
            "preset": "eval-digits",
            "config": {"sampling.steps": 6, "eval.images_per_prompt": 2},
            "params": {"models": [{}, {"job_id": trained}]},
        },
    )
    stack.wait_job(by_api, {"succeeded"}, timeout=400)
    expected = _means(stack, by_api)
    assert {reward for _, reward in expected} == set(EVAL_REWARDS)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            b = Browser(page, stack)
            try:
                _story(b, trained, expected)
            except BaseException:
                b.shot("evaluation-failure")
                print(stack.logs())
                raise
            b.assert_loopback_only()
        finally:
            browser.close()


def _story(b: Browser, trained: int, expected: dict[tuple[int, str], float]) -> None:
    page, stack = b.page, b.stack
    page.goto(stack.ui)
    b.wait_text("#tg-jobs", "short digits run", timeout=30)
    b.set_key(stack.key)
    # The train job's Run tab offers the comparison; clicking it creates and opens the job.
    page.locator(f"#tg-jobs tr[data-job-id='{trained}']").dblclick()
    b.wait_text("#tg-run-header", "short digits run")
    page.locator("#tg-evaluate-base").click()
    created = b.wait_text("#tg-evaluate-msg", r"Created evaluate job #\d+")
    evaluated = int(re.search(r"#(\d+)", created).group(1))  # type: ignore[union-attr]
    b.wait_text("#tg-run-header", "vs the base model")
    stack.wait_job(evaluated, {"succeeded"}, timeout=400)
    b.wait_text("#tg-evaluation", "base model", timeout=30)
    assert _means(stack, evaluated) == expected  # the API's job: the same fixed noises

    table = page.locator("#tg-evaluation-table")
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    assert headers[0] == "model" and sorted(headers[1:]) == EVAL_REWARDS
    rows = table.locator("tbody tr")
    # The table may first show the rows written so far; its timer redraws it once the job ended.
    page.wait_for_function(
        "() => document.querySelectorAll('#tg-evaluation-table tbody tr').length === 2",
        timeout=20_000,
    )
    assert rows.count() == 2
    assert rows.nth(0).locator("td").first.inner_text() == "base model"
    assert rows.nth(1).locator("td").first.inner_text() == f"job #{trained}, epoch 4 (EMA)"
    for index in range(2):
        cells = rows.nth(index).locator("td")
        for column, reward in enumerate(headers[1:], start=1):
            cell = cells.nth(column)
            shown = float(cell.get_attribute("data-reward-mean") or "nan")
            assert shown == pytest.approx(expected[(index, reward)], abs=1e-6), (index, reward)
            assert re.fullmatch(r"-?\d+\.\d{4} ± \d+\.\d{4}", cell.inner_text().strip())
    caption = table.locator("caption").inner_text()
    assert "95% Student t interval over 10 held-out prompts" in caption
    assert not page.locator("#tg-evaluate-base").is_visible()  # not offered on an evaluate job

    # A training job shows no evaluation table. (The table is let to list the new evaluate
    # job first: a refresh that adds a row on top while the row is double-clicked is what the
    # page must survive, tests/frontend/test_ui_runs_table_js.py, not what this story checks.)
    b.tab("Runs")
    page.wait_for_selector(f"#tg-jobs tr[data-job-id='{evaluated}']")
    page.locator(f"#tg-jobs tr[data-job-id='{trained}']").dblclick()
    b.wait_text("#tg-run-header", "short digits run")
    page.wait_for_function(
        "() => !document.querySelector('#tg-evaluation-table')?.checkVisibility()"
    )
    b.tab("Runs")
    page.locator(f"#tg-jobs tr[data-job-id='{evaluated}']").dblclick()
    b.wait_text("#tg-evaluation", "base model")
    b.shot("evaluation")
    section = page.locator("#tg-evaluation")
    section.scroll_into_view_if_needed()
    top = page.locator("#tg-run-header").bounding_box()
    box = section.bounding_box()
    assert top is not None and box is not None
    DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(
        path=str(DOCS_IMAGE),
        full_page=True,
        clip={
            "x": 0,
            "y": top["y"] - 16,
            "width": 1280,
            "height": box["y"] + box["height"] - top["y"] + 32,
        },
    )
    print(f"\nscreenshot: {DOCS_IMAGE}; {ARTIFACTS}/evaluation.png")
