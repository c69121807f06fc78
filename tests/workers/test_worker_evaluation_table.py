"""An evaluate job that compares models: the base model and a trained checkpoint (kept with an
EMA), on held-out prompts from the same fixed noises, scored by three eval rewards apart from the
training reward; each row of the table is written as metric points (mean, std, n, interval)."""

from __future__ import annotations

import math

import pytest
from worker_stack import TINY, Stack

from backend import crud
from backend.db import session_scope
from treegrpo.statistics import mean_interval

EVAL_REWARDS = {"brightness": 1.0, "contrast": 1.0, "boldness": 1.0}


def test_an_evaluate_job_tables_the_base_model_against_a_checkpoint(stack: Stack) -> None:
    stack.start_worker("et")
    try:
        trained = stack.submit(
            "train",
            preset="tiny-treegrpo",
            overrides={**TINY, "epochs": 2, "train.ema": True, "train.ema_every": 1},
        )
        done = stack.wait_status(trained, ("succeeded", "failed"), timeout=120)
        assert done["status"] == "succeeded", stack.explain(trained)()
        evaluated = stack.submit(
            "evaluate",
            preset="tiny-treegrpo",
            overrides={**TINY, "eval.rewards": EVAL_REWARDS, "eval.images_per_prompt": 2},
            params={"models": [{}, {"job_id": trained}]},
        )
        final = stack.wait_status(evaluated, ("succeeded", "failed", "cancelled"), timeout=120)
        assert final["status"] == "succeeded", stack.explain(evaluated)()
    finally:
        stack.stop_workers()

    with session_scope(stack.url) as session:
        points = crud.list_metrics(session, job_id=evaluated)
        samples, _ = crud.list_samples(session, job_id=evaluated, limit=1000)
    rows: dict[int, dict[str, float]] = {}
    for point in points:
        rows.setdefault(point.step, {})[point.name] = point.value
    assert sorted(rows) == [0, 1]  # row 0 = the base model, row 1 = the checkpoint
    assert rows[0]["evaluation/job"] == 0 and rows[0]["evaluation/ema"] == 0
    assert rows[1]["evaluation/job"] == trained and rows[1]["evaluation/epoch"] == 2
    assert rows[1]["evaluation/ema"] == 1  # the checkpoint keeps an EMA, so it is used
    prompts = sorted({s.prompt for s in samples})
    for row in (0, 1):
        gallery = [s for s in samples if s.epoch == row]
        assert len(gallery) == 2 * len(prompts)  # two images per held-out prompt
        for name in EVAL_REWARDS:
            # The interval is over prompts: each prompt's two images make one value.
            per_prompt = [
                sum(s.rewards[name] for s in gallery if s.prompt == p) / 2 for p in prompts
            ]
            expected = mean_interval(per_prompt, 0.95)
            assert rows[row][f"evaluation/{name}/mean"] == pytest.approx(expected.mean, abs=1e-5)
            assert rows[row][f"evaluation/{name}/n"] == len(prompts)
            assert rows[row][f"evaluation/{name}/low"] == pytest.approx(expected.low, abs=1e-5)
            assert math.isfinite(rows[row][f"evaluation/{name}/high"])
    # Same noises, other weights: the checkpoint's row is not the base model's.
    assert any(
        rows[0][f"evaluation/{name}/mean"] != rows[1][f"evaluation/{name}/mean"]
        for name in EVAL_REWARDS
    )
