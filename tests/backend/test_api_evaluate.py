"""POST /jobs for an evaluate job that compares models: the table's rows are stored as given,
and a row naming a job that does not exist is a 422 at its place, before anything is queued."""

from __future__ import annotations

from fastapi.testclient import TestClient

JOBS = "/api/v1/jobs"


def test_an_evaluate_job_takes_a_list_of_models(client: TestClient, auth: dict[str, str]) -> None:
    source = client.post(JOBS, json={"preset": "tiny-treegrpo"}, headers=auth).json()
    models = [{}, {"job_id": source["id"], "epoch": 2, "ema": False}]
    answer = client.post(
        JOBS,
        json={
            "kind": "evaluate",
            "preset": "eval-digits",
            "config": {"eval.images_per_prompt": 2},
            "params": {"models": models},
        },
        headers=auth,
    )
    assert answer.status_code == 201, answer.text
    job = answer.json()
    assert job["params"]["models"][1] == {"job_id": source["id"], "epoch": 2, "ema": False}
    assert set(job["config"]["eval"]["rewards"]) == {"digit_judge", "boldness", "contrast"}


def test_a_row_naming_no_job_is_refused_at_its_place(
    client: TestClient, auth: dict[str, str]
) -> None:
    answer = client.post(
        JOBS,
        json={"kind": "evaluate", "params": {"models": [{}, {"job_id": 999_999}]}},
        headers=auth,
    )
    assert answer.status_code == 422, answer.text
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["body", "params", "models", 1, "job_id"]
    assert "no job 999999" in error["msg"]
    both = client.post(
        JOBS,
        json={"kind": "evaluate", "params": {"models": [{}], "source_job_id": 1}},
        headers=auth,
    )
    assert both.status_code == 422, both.text
