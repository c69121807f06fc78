"""The Run tab's machines section: one row per node of a multi-node job, hosts and heartbeats
shown, user-reachable text escaped; nothing for a one-machine job."""

from __future__ import annotations

from datetime import UTC, datetime

from ui_factories import job_json

from frontend.client import Job
from frontend.nodes import nodes_html

XSS = "<img src=x onerror=alert(1)>"


def test_a_multi_node_job_lists_its_machines_with_hosts_and_heartbeats() -> None:
    nodes = [
        {
            "node_rank": 0,
            "attempt": 2,
            "status": "claimed",
            "worker": "gpu-a@host/pid-1",
            "host": "10.0.0.5",
            "heartbeat_at": "2026-12-06T08:00:00+00:00",
            "error": None,
        },
        {
            "node_rank": 1,
            "attempt": 2,
            "status": "failed",
            "worker": XSS,
            "host": "10.0.0.6",
            "heartbeat_at": "2026-12-06T07:58:00+00:00",
            "error": f"RuntimeError {XSS}",
        },
    ]
    job = Job.from_json(job_json(attempt=2, nodes=nodes))
    assert [node.host for node in job.nodes] == ["10.0.0.5", "10.0.0.6"]
    markup = nodes_html(job, now=datetime(2026, 12, 6, 8, 0, 30, tzinfo=UTC))
    assert "Machines (2, attempt 2)" in markup
    rows = markup.split("<tr>")[2:]
    assert "<td>0</td><td>claimed</td><td>10.0.0.5</td>" in rows[0]
    assert "30 s ago" in rows[0] and "2 min ago" in rows[1]
    assert "<img src=x" not in markup and "&lt;img src=x onerror=alert(1)&gt;" in markup


def test_a_one_machine_job_has_no_machines_section() -> None:
    assert nodes_html(Job.from_json(job_json())) == ""
