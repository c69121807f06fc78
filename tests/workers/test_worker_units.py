"""The worker's parts without a broker: Celery options, task names, the torch-free parent, how a
child's end becomes the job's state, the reconciler, the `treegrpo worker` command."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import update
from worker_db import claim, local_settings, new_job, row

from backend import crud
from backend.db import session_scope
from backend.models import Job, utcnow
from backend.queue import (
    QUEUE,
    TASK_BRANCH,
    TASK_EVALUATE,
    TASK_JOIN,
    TASK_PURGE,
    TASK_RECONCILE,
    TASK_SAMPLE,
    TASK_TRAIN,
)
from backend.settings import Settings
from backend.storage import log_relpath
from workers.app import create_app, worker_config
from workers.reconcile import reconcile, reconcile_interval
from workers.supervisor import Claimed, Supervisor, describe_exit
from workers.tasks import DeviceSlots

Sent = list[tuple[int, str, dict[str, Any]]]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    with local_settings(tmp_path, monkeypatch, stale_after_seconds=5) as made:
        yield made


def test_worker_config_for_long_gpu_jobs(tmp_path: Path) -> None:
    redis = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/0", max_job_seconds=60)
    config = worker_config(redis)
    assert config["worker_prefetch_multiplier"] == 1
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_concurrency"] == 1
    assert config["worker_pool"] == "threads"
    assert config["broker_transport_options"]["visibility_timeout"] > 60
    embedded = worker_config(Settings(data_dir=tmp_path))
    assert embedded["broker_url"] == "filesystem://"
    assert Path(embedded["broker_transport_options"]["data_folder_in"]).is_dir()


def test_the_app_registers_the_queue_s_task_names(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    ours = {name for name in app.tasks if name.startswith("treegrpo.")}
    assert ours == {
        TASK_TRAIN,
        TASK_SAMPLE,
        TASK_EVALUATE,
        TASK_BRANCH,
        TASK_RECONCILE,
        TASK_PURGE,
        TASK_JOIN,
    }
    assert app.conf.task_default_queue == QUEUE


def test_the_celery_parent_never_imports_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from backend.settings import Settings\n"
        "import workers.app, workers.cli, workers.reconcile, workers.supervisor, workers.tasks\n"
        f"workers.app.create_app(Settings(data_dir={str(tmp_path)!r}))\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_treegrpo_worker_is_a_subcommand() -> None:
    from treegrpo.cli import build_parser

    args = build_parser().parse_args(["worker", "--concurrency", "2", "--queues", "gpu"])
    assert (args.concurrency, args.queues, args.loglevel) == (2, "gpu", "info")


def test_exit_codes_read_as_words() -> None:
    assert describe_exit(-9) == ("was killed by SIGKILL (the out-of-memory killer sends SIGKILL)")
    assert describe_exit(-11) == "was killed by SIGSEGV"
    assert describe_exit(3) == "exited with code 3"


def test_device_slots_give_each_job_its_own_gpu() -> None:
    slots = DeviceSlots(2, "0,1,2")
    with slots.take() as first, slots.take() as second:
        assert {first, second} == {"0", "1"}
    with DeviceSlots(1, "0,1").take() as one:
        assert one is None  # one job at a time sees every GPU the worker sees
    with DeviceSlots(4, "0,1").take() as short:
        assert short is None  # fewer GPUs than jobs: left to CUDA_VISIBLE_DEVICES as is


# ---------------------------------------------------------------------------------------------
# From the child's end to the job's state


def supervisor(settings: Settings, job_id: int, sent: Sent) -> Supervisor:
    attempt = row(job_id)["attempt"]
    claimed = Claimed(job_id, attempt, "train", {})
    return Supervisor(settings, claimed, "unit", lambda *message: sent.append(message))


@pytest.mark.parametrize(
    ("code", "result", "reason", "killed", "status", "error"),
    [
        (0, {"outcome": "completed"}, None, False, "succeeded", None),
        (
            1,
            {"outcome": "failed", "error": "RewardError: no"},
            None,
            False,
            "failed",
            "RewardError: no",
        ),
        (1, {"outcome": "stopped"}, "cancel", False, "cancelled", None),
        (-9, None, "cancel", True, "cancelled", "forced stop: the process did not stop within"),
        (1, {"outcome": "stopped"}, None, False, "interrupted", None),
        (-9, None, None, False, "failed", "the job's process was killed by SIGKILL"),
        (-11, None, "lost", True, "running", None),
    ],
)
def test_the_child_s_end_becomes_the_job_s_state(
    settings: Settings,
    code: int,
    result: dict[str, str] | None,
    reason: str | None,
    killed: bool,
    status: str,
    error: str | None,
) -> None:
    job_id = new_job()
    claim(job_id)
    sent: Sent = []
    watcher = supervisor(settings, job_id, sent)
    watcher.log.write("the last thing the job said")
    watcher.stop_reason, watcher.killed = reason, killed
    watcher.conclude(code, result)
    after = row(job_id)
    assert after["status"] == status
    if error is None:
        assert after["error"] is None
    else:
        assert after["error"].startswith(error)
    if status == "failed" and result is None:
        assert after["error"].endswith("the last thing the job said")
    assert sent == []


def test_a_worker_shutdown_queues_the_job_again(settings: Settings) -> None:
    job_id = new_job()
    claim(job_id)
    sent: Sent = []
    watcher = supervisor(settings, job_id, sent)
    watcher.stop_reason = "shutdown"
    assert watcher.conclude(1, {"outcome": "stopped"}) == "queued"
    assert row(job_id)["status"] == "queued"
    assert sent == [(job_id, "train", {})]


# ---------------------------------------------------------------------------------------------
# The reconciler


def stale(job_id: int, seconds: float = 60) -> None:
    with session_scope() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_reconcile_marks_stale_jobs_lost_and_requeues_those_with_a_checkpoint(
    settings: Settings,
) -> None:
    fresh, bare, saved, stopping = (new_job() for _ in range(4))
    for job_id in (fresh, bare, saved, stopping):
        claim(job_id)
    with session_scope() as session:
        crud.set_checkpoint(
            session, job_id=saved, attempt=1, path="jobs/3/checkpoints/epoch-000002"
        )
        crud.set_checkpoint(session, job_id=stopping, attempt=1, path="jobs/4/checkpoints/e")
        crud.request_cancel(session, job_id=stopping)
    for job_id in (bare, saved, stopping):
        stale(job_id)
    sent: Sent = []
    actions = dict(reconcile(settings, lambda *message: sent.append(message)))

    assert row(fresh)["status"] == "running" and fresh not in actions
    assert row(bare)["status"] == "lost" and "no checkpoint" in actions[bare]
    assert row(stopping)["status"] == "cancelled" and "being cancelled" in actions[stopping]
    assert "worker was lost" in (row(stopping)["error"] or "")
    assert row(saved)["status"] == "queued"
    assert sent == [(saved, "train", {})]
    log = (settings.resolved_artifact_dir / log_relpath(saved)).read_text()
    assert "[reconciler] job lost: heartbeat stale since" in log
    assert "queued again to resume from jobs/3/checkpoints/epoch-000002" in log
    # The next worker claims it as a new attempt; a second pass changes nothing.
    assert claim(saved) == 2
    assert reconcile(settings, lambda *message: sent.append(message)) == []


def test_reconcile_puts_a_job_back_when_the_broker_refuses(settings: Settings) -> None:
    job_id = new_job()
    claim(job_id)
    with session_scope() as session:
        crud.set_checkpoint(session, job_id=job_id, attempt=1, path="jobs/1/checkpoints/e")
    stale(job_id)

    def refuse(*message: Any) -> None:
        raise ConnectionError("broker down")

    reconcile(settings, refuse)
    after = row(job_id)
    assert after["status"] == "lost"
    assert "could not be queued again" in after["error"] and "broker down" in after["error"]


def test_reconcile_interval_follows_the_staleness_limit(tmp_path: Path) -> None:
    assert reconcile_interval(Settings(data_dir=tmp_path)) == 30.0
    assert reconcile_interval(Settings(data_dir=tmp_path, stale_after_seconds=4)) == 1.0


def test_a_child_whose_worker_died_exits_by_itself(tmp_path: Path) -> None:
    # A "worker" that starts a child watching it, then is SIGKILLed alone (not its group).
    child_code = (
        "import os, sys, threading, time\n"
        "from workers.runner import _watch_parent\n"
        "threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()\n"
        "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    pid_file = tmp_path / "child.pid"
    worker_code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {child_code!r}, {str(pid_file)!r}])\n"
        "time.sleep(60)\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", worker_code])
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the child did not start"
            time.sleep(0.1)
        child = psutil.Process(int(pid_file.read_text()))
        worker.kill()
        worker.wait()
        # Within a second or two of noticing, the orphan exits (status 70) and is reaped.
        with contextlib.suppress(psutil.NoSuchProcess):
            child.wait(timeout=5)
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    finally:
        worker.kill()


def test_child_writes_ride_out_a_database_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    import workers.context as context

    monkeypatch.setattr(context, "DB_RETRY_PAUSES", (0.0, 0.0))
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise OperationalError("UPDATE jobs", {}, Exception("server closed the connection"))
        return "written"

    assert context.with_db_retry(flaky) == "written"
    calls["n"] = -10
    with pytest.raises(OperationalError):
        context.with_db_retry(flaky)  # down for longer than the retries: the error surfaces


def test_a_forced_stop_kills_the_job_s_whole_process_tree(settings: Settings) -> None:
    # A child that started a grandchild, as the launcher of a multi-process job starts ranks.
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    grandchild = psutil.Process(int(child.stdout.readline()))
    job_id = new_job()
    claim(job_id)
    supervisor(settings, job_id, []).kill(child)
    assert child.wait(timeout=10) == -9
    with contextlib.suppress(psutil.NoSuchProcess):
        grandchild.wait(timeout=10)
    assert not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE
