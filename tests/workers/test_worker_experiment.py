"""An experiment of 4 methods x 2 seeds x 2 epochs runs through the API and a real worker, and
its statistics match values worked out here from the runs' metric points.

The tiny random-init model keeps it cheap: 8 train jobs of 2 epochs on one worker. Every run is
evaluated on the same 8 held-out images (shared noise), so every run's step-0 point is the same
number; the statistics are then recomputed by hand, with plain arithmetic, and compared.
"""

from __future__ import annotations

import math
from pathlib import Path

from fastapi.testclient import TestClient
from worker_stack import FINAL, make_stack, wait_until

from backend import crud
from backend.api import create_app
from backend.db import session_scope
from backend.queue import queue_of

METHODS = ["tiny-treegrpo", "tiny-dancegrpo", "tiny-flowgrpo", "tiny-mixgrpo"]
BODY = {
    "name": "four methods",
    "axes": {"preset": METHODS, "seed": [0, 1]},
    "config": {"device": "cpu", "sampling.steps": 4, "checkpoint_every": 0},
    "budget": {"epochs": 2},
    "eval": {"count": 8, "noise_seed": 5, "every": 1},
}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def test_an_experiment_runs_and_its_statistics_are_right(tmp_path: Path) -> None:
    with make_stack("filesystem", tmp_path) as stack:
        with session_scope(stack.url) as session:
            _, key = crud.create_api_key(session, name="researcher", role="member")
        headers = {"X-API-Key": key}
        stack.start_worker("e", queues=queue_of("train"))
        with TestClient(create_app(stack.settings)) as client:
            bad = client.post(
                "/api/v1/experiments",
                json={**BODY, "axes": {"preset": METHODS, "tree.k": [1]}},
                headers=headers,
            )
            assert bad.status_code == 422, bad.text
            assert bad.json()["detail"][0]["loc"][:2] == ["body", "runs"]
            assert client.get("/api/v1/experiments").json()["count"] == 0  # nothing was made

            made = client.post("/api/v1/experiments", json=BODY, headers=headers)
            assert made.status_code == 201, made.text
            experiment = made.json()
            runs = experiment["runs"]
            assert [r["name"] for r in runs] == [
                f"four methods: {m} seed={s}" for m in METHODS for s in (0, 1)
            ]
            assert [r["group"] for r in runs] == [m for m in METHODS for _ in (0, 1)]
            ids = [r["job_id"] for r in runs]
            for job_id in ids:
                wait_until(
                    lambda j=job_id: stack.job(j)["status"] in FINAL,
                    600,
                    f"job {job_id} to finish",
                    stack.explain(job_id),
                )
                assert stack.job(job_id)["status"] == "succeeded", stack.explain(job_id)()
            answer = client.get(f"/api/v1/experiments/{experiment['id']}").json()
            listed = client.get("/api/v1/experiments").json()
        stack.stop_workers()

        assert listed["count"] == 1 and listed["data"][0]["status_counts"] == {"succeeded": 8}
        points = {job_id: stack.metric_points(job_id) for job_id in ids}
    by_step = {
        job_id: {step: {n: v for s, n, v in rows if s == step} for step, _, _ in rows}
        for job_id, rows in points.items()
    }
    # The trainer's own clock sits beside wall-clock, and the yardstick after every epoch.
    for steps in by_step.values():
        assert sorted(steps) == [0, 1, 2]
        for step in (1, 2):
            assert steps[step]["cpu_clock"] > 0 and steps[step]["wall_clock"] > 0
            assert "heldout/reward" in steps[step]
    # One yardstick: the untrained model scores the same on every run, whatever its seed.
    bases = {steps[0]["heldout/reward"] for steps in by_step.values()}
    assert len(bases) == 1
    base = bases.pop()

    stats = answer["statistics"]
    assert stats["base_reward"] == base
    # By hand: each group's final reward is the median (here the mean) of its 2 seeds' step-2
    # points; the best group's median sets 100% of the gain.
    finals = {
        m: [by_step[ids[2 * i + s]][2]["heldout/reward"] for s in (0, 1)]
        for i, m in enumerate(METHODS)
    }
    medians = {m: (v[0] + v[1]) / 2 for m, v in finals.items()}
    best = max(medians.values())
    groups = {g["group"]: g for g in stats["groups"]}
    for m in METHODS:
        assert math.isclose(groups[m]["final_reward"]["median"], medians[m])
        assert groups[m]["final_reward"]["low"] == min(finals[m])
        cpu_per_iter = [
            _median([by_step[ids[2 * METHODS.index(m) + s]][e]["time/epoch_cpu"] for e in (1, 2)])
            for s in (0, 1)
        ]
        assert math.isclose(groups[m]["cpu_seconds_per_iteration"]["median"], sum(cpu_per_iter) / 2)
    # lr 1e-3 on the brightness reward: two epochs move the tiny model's held-out reward up
    assert best > base, (base, medians)
    assert stats["best_reward"] == best
    half = base + 0.5 * (best - base)
    assert math.isclose(stats["targets"]["0.5"], half)

    def first_time(job_id: int, target: float, clock: str) -> float:
        for step in (0, 1, 2):
            if by_step[job_id][step]["heldout/reward"] >= target:
                return by_step[job_id][step][clock]
        return math.inf

    # Paired ratio at 50% on the CPU clock, TreeGRPO (the first group) against each method:
    # per seed the method's time over TreeGRPO's, a time never reached counting as the run's
    # last clock value (a bound), pairs where neither reached it left out; geometric mean.
    for i, m in enumerate(METHODS[1:], start=1):
        per_seed = {}
        for s in (0, 1):
            tree, other = ids[s], ids[2 * i + s]
            a, b = first_time(tree, half, "cpu_clock"), first_time(other, half, "cpu_clock")
            if math.isinf(a) and math.isinf(b):
                continue
            a = by_step[tree][2]["cpu_clock"] if math.isinf(a) else a
            b = by_step[other][2]["cpu_clock"] if math.isinf(b) else b
            per_seed[str(s)] = b / a
        ratio = next(
            r
            for r in stats["ratios"]
            if r["group"] == m and r["clock"] == "cpu_clock" and r["level"] == 0.5
        )
        assert ratio["reference"] == "tiny-treegrpo"
        assert ratio["per_seed"].keys() == per_seed.keys()
        for s, value in per_seed.items():
            assert math.isclose(ratio["per_seed"][s], value)
        if per_seed:
            expected = math.exp(sum(math.log(v) for v in per_seed.values()) / len(per_seed))
            assert math.isclose(ratio["ratio"], expected)
            assert ratio["low"] <= ratio["ratio"] <= ratio["high"]
    # The Pareto front: no group on it is beaten on both cost and reward by another.
    front = stats["pareto"]
    pts = stats["pareto_points"]
    for g in front:
        for other, p in pts.items():
            assert not (
                p["cpu_seconds_per_iteration"] < pts[g]["cpu_seconds_per_iteration"]
                and p["final_reward"] > pts[g]["final_reward"]
            ), (g, other)
