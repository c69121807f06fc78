"""/experiments without workers: a grid becomes named, grouped, queued jobs carrying the shared
yardstick; presets define one; bad axes or settings make nothing; cancel, resume and delete act
on every run; `treegrpo experiment`'s body and text."""

from __future__ import annotations

import argparse
from pathlib import Path

import api_testing as at
import pytest
from fastapi.testclient import TestClient

from backend import crud
from backend.api import create_app
from backend.db import session_scope
from backend.experiment_cli import create_body, show_text
from backend.settings import Settings
from treegrpo.cli import main as treegrpo_main

EXPERIMENTS = "/api/v1/experiments"
BODY = {
    "name": "k sweep",
    "preset": "tiny-treegrpo",
    "axes": {"tree.k": [2, 3], "seed": [0, 1]},
    "config": {"train.lr": 5e-4},
    "budget": {"seconds": 30},
    "eval": {"count": 16, "noise_seed": 9, "every": 2},
}


def test_a_grid_becomes_grouped_jobs_with_one_yardstick(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    answer = client.post(EXPERIMENTS, json=BODY, headers=auth)
    assert answer.status_code == 201, answer.text
    experiment = answer.json()
    assert experiment["status_counts"] == {"queued": 4}
    names = [run["name"] for run in experiment["runs"]]
    assert names == [
        "k sweep: tree.k=2 seed=0",
        "k sweep: tree.k=2 seed=1",
        "k sweep: tree.k=3 seed=0",
        "k sweep: tree.k=3 seed=1",
    ]
    with session_scope(settings.resolved_database_url) as session:
        jobs = crud.experiment_jobs(session, experiment_id=experiment["id"])
        assert [(j.config["tree"]["k"], j.config["seed"]) for j in jobs] == [
            (2, 0),
            (2, 1),
            (3, 0),
            (3, 1),
        ]
        assert all(j.config["train"]["lr"] == 5e-4 for j in jobs)
        assert {j.experiment_group for j in jobs} == {"tree.k=2", "tree.k=3"}
        # every run: the same noise seed and count, whatever its own seed
        assert {tuple(sorted(j.params["experiment"].items())) for j in jobs} == {
            (
                ("budget_seconds", 30.0),
                ("eval_count", 16),
                ("eval_every", 2),
                ("eval_noise_seed", 9),
                ("experiment_id", experiment["id"]),
                ("group", group),
            )
            for group in ("tree.k=2", "tree.k=3")
        }
    shown = client.get(f"{EXPERIMENTS}/{experiment['id']}").json()
    assert shown["statistics"]["groups"][0]["group"] == "tree.k=2"
    assert shown["statistics"]["targets"] == {}  # nothing measured yet

    cancelled = client.post(f"{EXPERIMENTS}/{experiment['id']}/cancel", headers=auth).json()
    assert cancelled["status_counts"] == {"cancelled": 4}
    resumed = client.post(f"{EXPERIMENTS}/{experiment['id']}/resume", headers=auth).json()
    assert resumed["status_counts"] == {"queued": 4}
    refused = client.delete(f"{EXPERIMENTS}/{experiment['id']}", headers=auth)
    assert refused.status_code == 409  # runs are queued: cancel first
    client.post(f"{EXPERIMENTS}/{experiment['id']}/cancel", headers=auth)
    assert client.delete(f"{EXPERIMENTS}/{experiment['id']}", headers=auth).status_code == 204
    assert client.get(f"{EXPERIMENTS}/{experiment['id']}").status_code == 404
    assert client.get("/api/v1/jobs").json()["count"] == 0  # its runs went with it


def test_an_experiment_preset_defines_the_grid(client: TestClient, auth: dict[str, str]) -> None:
    answer = client.post(
        EXPERIMENTS,
        json={"experiment_preset": "digits-lora", "budget": {"epochs": 1}},
        headers=auth,
    )
    assert answer.status_code == 201, answer.text
    experiment = answer.json()
    assert experiment["name"] == "digits-lora"
    assert len(experiment["runs"]) == 4  # rank 4, 16 x lr 1e-4, 1e-3, one seed
    assert experiment["budget"] == {"epochs": 1}
    assert experiment["evaluation"]["count"] == 4600  # the digits SE < 0.005 default


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"axes": {"tree.k": [1, 2]}}, ["body", "runs", "tree.k=1", "config", "tree.k"]),
        ({"axes": {"tree.k": []}}, ["body", "axes", "tree.k"]),
        ({"budget": {"epochs": 2, "seconds": 3}}, ["body", "budget"]),
        ({"experiment_preset": "nope"}, ["body", "experiment_preset"]),
        ({"axes": {"tree..k": [2]}}, ["body", "runs", "tree..k=2", "config"]),
    ],
)
def test_bad_requests_name_the_field_and_make_nothing(
    client: TestClient, auth: dict[str, str], change: dict, loc: list
) -> None:
    answer = client.post(EXPERIMENTS, json={**BODY, **change}, headers=auth)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][: len(loc)] == loc
    assert client.get(EXPERIMENTS).json()["count"] == 0
    assert client.get("/api/v1/jobs").json()["count"] == 0


def test_a_grid_beyond_the_queue_quota_makes_nothing(tmp_path: Path, sqlite_url: str) -> None:
    settings = at.make_settings(tmp_path, sqlite_url, max_queued_per_key=3)
    with session_scope(settings.resolved_database_url) as session:
        _, key = crud.create_api_key(session, name="member", role="member")
    with TestClient(create_app(settings)) as client:
        answer = client.post(EXPERIMENTS, json=BODY, headers={"X-API-Key": key})  # 4 runs
        assert answer.status_code == 429, answer.text
        assert "has 4 runs" in answer.json()["detail"]
        assert client.get("/api/v1/jobs").json()["count"] == 0
        assert client.get(EXPERIMENTS).json()["count"] == 0


def test_creating_needs_a_key(client: TestClient) -> None:
    assert client.post(EXPERIMENTS, json=BODY).status_code == 401


def test_the_cli_body_and_text() -> None:
    args = argparse.Namespace(
        name=None,
        experiment_preset=None,
        preset="digits-treegrpo",
        reference="tree.k=3",
        axis=["tree.k=2,3", "seed=0,1", "tree.window=random,fixed"],
        set=["train.lr=3e-4"],
        epochs=None,
        seconds=60.0,
        eval_count=512,
        eval_every=None,
        noise_seed=None,
    )
    assert create_body(args) == {
        "preset": "digits-treegrpo",
        "reference_group": "tree.k=3",
        "axes": {"tree.k": [2, 3], "seed": [0, 1], "tree.window": ["random", "fixed"]},
        "config": {"train.lr": 3e-4},
        "budget": {"seconds": 60.0},
        "eval": {"count": 512},
    }
    with pytest.raises(ValueError, match="PATH=V1,V2"):
        create_body(argparse.Namespace(**{**vars(args), "axis": ["tree.k"]}))
    experiment = {
        "id": 3,
        "name": "k",
        "status_counts": {"succeeded": 2},
        "runs": [],
        "statistics": {
            "base_reward": 0.7,
            "best_reward": 0.9,
            "targets": {"0.5": 0.8},
            "groups": [
                {
                    "group": "tree.k=3",
                    "final_reward": {"median": 0.9, "low": 0.88, "high": 0.92, "n": 2},
                    "cpu_seconds_per_iteration": {"median": 5.0, "n": 1},
                    "time_to_target": {"0.5": {"cpu_clock": {"median": None, "n": 2}}},
                }
            ],
            "ratios": [
                {
                    "reference": "tree.k=3",
                    "group": "tree.k=2",
                    "clock": "cpu_clock",
                    "level": 0.5,
                    "ratio": 2.0,
                    "low": 1.5,
                    "high": 2.5,
                    "per_seed": {"0": 2.0},
                    "censored": 0,
                }
            ],
            "pareto": ["tree.k=3"],
        },
    }
    text = show_text(experiment)
    assert "tree.k=3 | 0.900 [0.880-0.920] | 5.00 | not reached" in text
    assert "tree.k=3 vs tree.k=2 at 0.5: 2.00x sooner [1.50-2.50] (1 seeds, 0 bounded)" in text


def test_a_run_that_missed_a_level_counts_at_the_wall_clock_budget(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    body = {
        "preset": "tiny-treegrpo",
        "axes": {"tree.k": [2, 3], "seed": [0]},
        "budget": {"seconds": 30},
        "reference_group": "tree.k=2",
    }
    experiment = client.post(EXPERIMENTS, json=body, headers=auth).json()
    fast, slow = (run["job_id"] for run in experiment["runs"])
    with session_scope(settings.resolved_database_url) as session:
        for job_id, reward in ((fast, 0.9), (slow, 0.55)):  # the slow run never gains
            crud.upsert_metrics(
                session, job_id=job_id, step=0, values={"heldout/reward": 0.5, "wall_clock": 0.0}
            )
            for step, clock in ((1, 10.0), (2, 20.0)):
                values = {"heldout/reward": reward, "wall_clock": clock, "cpu_clock": clock}
                crud.upsert_metrics(session, job_id=job_id, step=step, values=values)
    ratios = client.get(f"{EXPERIMENTS}/{experiment['id']}").json()["statistics"]["ratios"]
    (at_50,) = [r for r in ratios if r["clock"] == "wall_clock" and float(r["level"]) == 0.5]
    # k=2 reached half the gain at 10 s; k=3 never did, within a 30 s budget: at least 3x
    # (by the run's own end, 20 s, it would have read 2x).
    assert at_50["ratio"] == pytest.approx(3.0) and at_50["censored"]


def test_the_cli_cancels_and_deletes_an_experiment(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    made = client.post(EXPERIMENTS, json=BODY, headers=auth).json()["id"]
    with at.live_server(create_app(settings)) as server:
        base = ["experiment", "--api", server.url, "--api-key", auth["X-API-Key"]]
        assert treegrpo_main([*base, "delete", str(made)]) == 2  # runs still queued: a 409
        assert treegrpo_main([*base, "cancel", str(made)]) == 0
        assert treegrpo_main([*base, "delete", str(made)]) == 0
        assert treegrpo_main([*base, "delete", str(made)]) == 2  # gone: a 404
    assert client.get(EXPERIMENTS).json()["count"] == 0
    assert client.get("/api/v1/jobs").json()["count"] == 0
