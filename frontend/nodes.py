"""The Run tab's "Machines" section: a multi-node job's nodes, their hosts and heartbeats."""

from __future__ import annotations

from datetime import datetime

from frontend.client import Job
from frontend.render import age, esc


def nodes_html(job: Job, now: datetime | None = None) -> str:
    """A small table, one row per machine of the latest attempt; empty for one-machine jobs."""
    if not job.nodes:
        return ""
    rows = "".join(
        "<tr>"
        f"<td>{node.node_rank}</td>"
        f"<td>{esc(node.status)}</td>"
        f"<td>{esc(node.host or '-')}</td>"
        f"<td>{esc(node.worker or '-')}</td>"
        f"<td>{esc(age(node.heartbeat_at, now))}</td>"
        f"<td>{esc(node.error or '')}</td>"
        "</tr>"
        for node in job.nodes
    )
    head = "<tr><th>node</th><th>status</th><th>host</th><th>worker</th>"
    head += "<th>heartbeat</th><th>error</th></tr>"
    return (
        f'<div class="tg-nodes" data-testid="job-nodes"><h4>Machines ({len(job.nodes)}, '
        f"attempt {job.attempt})</h4><table>{head}{rows}</table></div>"
    )
