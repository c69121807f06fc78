"""Property-based run over every operation of the OpenAPI schema (schemathesis): generated valid
and invalid requests, with a valid API key, against seeded rows; no answer may be a 5xx.

Bounded: 30 examples per operation (EXAMPLES), so the whole run stays well under a minute.
"""

from __future__ import annotations

import time
from pathlib import Path

import api_testing as at
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from backend import crud, storage
from backend.api import create_app
from backend.db import session_scope

# Per operation: valid requests, then requests that break the schema on purpose.
EXAMPLES = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 10}


def _seed(url: str, artifact_dir: Path) -> str:
    """Rows in every state and table, so generated ids sometimes name real things."""
    done = at.new_job(url, name="<b>done</b>")
    attempt = at.run_job(url, done.id)
    at.add_metrics(url, done.id, range(3), attempt=attempt)
    at.add_tree(url, done.id, epoch=0)
    at.add_samples(url, done.id, 0, ["x"])
    with session_scope(url) as session:
        crud.set_checkpoint(
            session, job_id=done.id, attempt=attempt, path=storage.checkpoints_relpath(done.id)
        )
    checkpoint = artifact_dir / storage.checkpoints_relpath(done.id)
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text("{}")
    (artifact_dir / storage.log_relpath(done.id)).write_text("line\n")
    at.finish(url, done.id, attempt, "succeeded")
    failed = at.new_job(url)
    at.finish(url, failed.id, at.run_job(url, failed.id), "failed", error="x")
    at.new_job(url)  # queued
    with session_scope(url) as session:
        _, key = crud.create_api_key(session, name="fuzz", role="admin")
    return key


@pytest.mark.slow
def test_no_operation_answers_5xx(tmp_path: Path, db_url: str) -> None:
    app_settings = at.make_settings(
        tmp_path, db_url, sse_poll_seconds=0.01, sse_max_seconds=0.05, sse_keepalive_seconds=0.02
    )
    key = _seed(db_url, app_settings.resolved_artifact_dir)
    app = create_app(app_settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 19  # every route of docs/API.md
    server_errors: list[str] = []
    timings: dict[str, float] = {}

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES[mode],
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: schemathesis.Case) -> None:
                response = case.call(headers={"X-API-Key": key})
                if response.status_code >= 500:
                    server_errors.append(
                        f"{response.status_code} {case.method} {case.formatted_path} "
                        f"query={case.query} body={case.body!r:.300}: {response.text[:300]}"
                    )

            started = time.monotonic()
            try:
                check()
            except Unsatisfiable:
                # No invalid request exists for this operation (e.g. GET /health has no input).
                assert mode is GenerationMode.NEGATIVE, operation.label
            timings[f"{mode.value} {operation.label}"] = time.monotonic() - started

    slowest = sorted(timings.items(), key=lambda item: -item[1])[:5]
    print("slowest operations:", ", ".join(f"{name} {s:.1f}s" for name, s in slowest))
    assert server_errors == []
