"""`treegrpo worker`: start a Celery worker for the studio's jobs (entry point of the
`treegrpo.commands` group, so the core command never imports the workers).

    treegrpo worker                                   # one job at a time, both lanes
    treegrpo worker --queues treegrpo                 # training only (train, evaluate)
    treegrpo worker --queues treegrpo-interactive     # interactive only (sample, branch, purge)
    CUDA_VISIBLE_DEVICES=0,1 treegrpo worker --concurrency 2   # two jobs, one GPU each
"""

from __future__ import annotations

import argparse
import sys

from backend.queue import INTERACTIVE_QUEUE, QUEUE

DEFAULT_QUEUES = f"{QUEUE},{INTERACTIVE_QUEUE}"

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def check_database(url: str) -> str | None:
    """Why the database is not ready for jobs, or None."""
    from backend.migrate import current_revision, head_revision

    try:
        current = current_revision(url)
    except Exception as exc:
        return f"cannot reach the database ({type(exc).__name__}: {exc})"
    if current != head_revision():
        return (
            f"the database schema is at {current or 'nothing'}, not {head_revision()}: "
            "run `treegrpo migrate` first"
        )
    return None


def cmd_worker(args: argparse.Namespace) -> int:
    from backend.settings import get_settings
    from workers.app import create_app

    settings = get_settings()
    problem = check_database(settings.resolved_database_url)
    if problem:
        # Not fatal: the database may come up after the worker (compose restarts both).
        print(f"treegrpo worker: warning: {problem}", file=sys.stderr, flush=True)
    app = create_app(settings)
    argv = [
        "worker",
        "--pool=threads",
        f"--concurrency={args.concurrency}",
        f"--queues={args.queues}",
        f"--loglevel={args.loglevel.upper()}",
        # No worker-to-worker chatter: jobs coordinate through the database.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    code = app.start(argv)
    return int(code or 0)


def register_worker(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run a worker that trains, samples, evaluates and branches the studio's jobs",
        description="A Celery worker on the broker of the settings (TREEGRPO_BROKER_URL: "
        "Redis, or the filesystem transport under TREEGRPO_DATA_DIR by default). Each job runs "
        "in its own child process; the worker heartbeats it, relays cancels, and writes the "
        "final state. SIGTERM or Ctrl-C checkpoints running jobs and queues them again.",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="jobs at once, one process each (default 1; with CUDA_VISIBLE_DEVICES listing as "
        "many GPUs, each job gets its own)",
    )
    parser.add_argument(
        "--queues",
        default=DEFAULT_QUEUES,
        help=f"comma-separated queues to consume (default {DEFAULT_QUEUES}: both lanes; "
        f"{QUEUE} alone serves training, {INTERACTIVE_QUEUE} alone the interactive lane)",
    )
    parser.add_argument("--loglevel", default="info", choices=LOG_LEVELS)
    parser.add_argument("--hostname", default=None, help="worker name (default: celery@host)")
    parser.set_defaults(func=cmd_worker)
