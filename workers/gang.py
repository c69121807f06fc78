"""Multi-node jobs (`nodes > 1`): the workers form a gang through the database, then each machine
runs one torchrun agent and the agents meet at a c10d rendezvous on node 0.

    worker A takes the job message        -> node 0: rows for the attempt (node 0 claimed by A,
                                             with the rendezvous host:port; the others open),
                                             and nodes - 1 join messages
    workers B, C take a join message      -> claim a slot with one conditional UPDATE
    every slot claimed (the gang formed)  -> every node starts `python -m workers.runner` with
                                             the rendezvous; torchrun assigns the ranks
    not formed in gang_timeout_seconds    -> the job goes back to the queue (a new attempt, a
                                             new rendezvous id): two half-formed gangs never
                                             wait on each other for ever

Node 0 owns the job row as a one-machine job's worker does (heartbeat, cancel, final state);
the other nodes heartbeat their own row and follow the job's: a cancel reaches their ranks
through their stop file, and an attempt that is no longer running ends their processes. Any
node's failure ends the attempt everywhere (torchrun's `--max-restarts 0`; the collectives
break). When a node's worker is gone, node 0 ends the attempt `interrupted` and queues the job
again: the next attempt resumes from the last checkpoint with a new rendezvous id. If node 0's
own worker dies, the job's heartbeat goes stale and the reconciler does the same.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from backend import crud
from backend.crud.nodes import CLAIMED, DONE, FAILED
from backend.db import session_scope
from backend.models import JobNode, JobStatus
from backend.settings import Settings
from backend.storage import job_dir
from workers.joblog import JobLog
from workers.supervisor import SHUTTING_DOWN, Claimed, Requeue, Supervisor

Join = Callable[[int, int], None]


def node_address(settings: Settings) -> str:
    """How the other machines reach this one: TREEGRPO_NODE_ADDR, else the host name."""
    return settings.node_addr or socket.gethostname()


def free_port(address: str) -> int:
    """A port nothing listens on now, for node 0's rendezvous store. Another process could take
    it before torchrun binds it; the attempt would then fail and be queued again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def rendezvous_id(job_id: int, attempt: int) -> str:
    """New at every attempt, so a restarted job never meets the agents of a dead attempt."""
    return f"treegrpo-job-{job_id}-attempt-{attempt}"


def describe_node(node: JobNode) -> str:
    return f"node {node.node_rank} ({node.worker or 'unclaimed'} on {node.host or '?'})"


class NodeSupervisor(Supervisor):
    """One machine of a gang: the usual child process, with the rendezvous on its command line.
    Node 0 keeps the job row; the others only their node's row."""

    def __init__(
        self,
        settings: Settings,
        job: Claimed,
        worker: str,
        requeue: Requeue,
        gpu: str | None,
        node: JobNode,
        endpoint: str,
    ) -> None:
        super().__init__(settings, job, worker, requeue, gpu)
        self.node_rank = node.node_rank
        self.host = node.host or node_address(settings)
        self.endpoint = endpoint
        self.peer_lost: str | None = None
        if self.node_rank > 0:
            # Each machine logs to a file of its own: with a bucket, one shared key would be
            # overwritten by whichever machine uploaded last.
            self.log_key = f"{job_dir(job.job_id)}/node-{self.node_rank}.log"
            self.log = JobLog(self.store / self.log_key, "worker")

    @property
    def leader(self) -> bool:
        return self.node_rank == 0

    def runner_command(self, stop_file: Path, result_file: Path) -> list[str]:
        return [
            *super().runner_command(stop_file, result_file),
            "--rdzv-endpoint",
            self.endpoint,
            "--rdzv-id",
            rendezvous_id(self.job.job_id, self.job.attempt),
            "--node-rank",
            str(self.node_rank),
            "--local-addr",
            self.host,
            "--join-timeout",
            f"{self.settings.gang_timeout_seconds:g}",
        ]

    def heartbeat(self) -> str | None:
        job = self.job
        with session_scope(self.url) as session:
            mine = crud.beat_node(
                session, job_id=job.job_id, attempt=job.attempt, node_rank=self.node_rank
            )
            if not self.leader:
                return self.status() if mine else None
            status = crud.heartbeat(session, job_id=job.job_id, attempt=job.attempt)
            lost = self.lost_peers(crud.list_nodes(session, job_id=job.job_id, attempt=job.attempt))
        if lost and self.peer_lost is None:
            # A peer that hangs rather than dies would hold the collectives for gloo's or
            # nccl's timeout (minutes): its stale row ends the attempt now.
            self.peer_lost = f"{lost[0]} stopped heartbeating"
            self.log.write(f"{self.peer_lost}: ending this attempt")
            return None
        return status

    def lost_peers(self, nodes: Iterable[JobNode]) -> list[str]:
        """The other nodes still running whose heartbeat is stale (their worker is gone)."""
        cutoff: datetime = crud.stale_cutoff(self.settings.stale_after_seconds)
        return [
            describe_node(node)
            for node in nodes
            if node.node_rank != self.node_rank
            and node.status == CLAIMED
            and (node.heartbeat_at is None or node.heartbeat_at < cutoff)
        ]

    def conclude(self, code: int, result: dict[str, str | None] | None) -> str:
        outcome = result.get("outcome") if result else None
        error = result.get("error") if result else None
        job = self.job
        with session_scope(self.url) as session:
            crud.end_node(
                session,
                job_id=job.job_id,
                attempt=job.attempt,
                node_rank=self.node_rank,
                status=DONE if outcome in ("completed", "stopped") else FAILED,
                error=error if outcome not in ("completed", "stopped") else None,
            )
        if not self.leader:
            self.log.write(f"node {self.node_rank}: {outcome or 'ended'} (exit code {code})")
            return outcome or "failed"
        if self.stop_reason == "lost" and self.peer_lost is None:
            return super().conclude(code, result)  # the job is no longer this attempt's
        if outcome == "stopped" and self.stop_reason is None and self.status() == "cancelling":
            # Another machine passed the cancel on before this one's next tick read it.
            self.stop_reason = "cancel"
        if outcome == "stopped" and self.stop_reason is None and not SHUTTING_DOWN.is_set():
            # Nobody asked node 0 to stop: another machine's worker is shutting down (its ranks
            # checkpointed and stopped, and the stop is collective). Its next worker resumes.
            self.wait_for_peers()
            status = self.finish("interrupted", "another machine of the gang stopped the job")
            if status == "interrupted" and self.queue_again():
                return "queued"
            return status
        if outcome in ("completed", "stopped") or self.stop_reason in ("cancel", "shutdown"):
            # The other machines finish within moments of this one: their rows end first, so
            # a finished job never shows a machine still running (nor one that the job's end
            # made its supervisor kill).
            self.wait_for_peers()
            return super().conclude(code, result)
        lost, errors = self.wait_for_peers()
        if self.peer_lost or lost:
            reason = self.peer_lost or f"{lost[0]} was lost"
            status = self.finish("interrupted", f"{reason}; the attempt ended on every node")
            # As the reconciler does with a lost job: again only from a checkpoint (else a
            # machine that keeps failing would restart the job from scratch for ever).
            if status == "interrupted" and self.has_checkpoint() and self.queue_again():
                return "queued"
            return status
        if errors:
            mine = [f"node 0: {error}"] if error else []
            return self.finish("failed", "; ".join([*errors, *mine])[:2000])
        return super().conclude(code, result)

    def has_checkpoint(self) -> bool:
        with session_scope(self.url) as session:
            return bool(crud.get_job(session, job_id=self.job.job_id).checkpoint_path)

    def wait_for_peers(self) -> tuple[list[str], list[str]]:
        """After this node's processes ended: wait (up to the staleness limit) until every
        other node has ended or gone stale. Returns (lost nodes, errors the others reported);
        a node still running at the limit counts as lost."""
        job = self.job
        deadline = time.monotonic() + self.settings.stale_after_seconds
        while True:
            with session_scope(self.url) as session:
                nodes = [
                    node
                    for node in crud.list_nodes(session, job_id=job.job_id, attempt=job.attempt)
                    if node.node_rank != self.node_rank
                ]
                session.expunge_all()
            lost = self.lost_peers(nodes)
            running = [node for node in nodes if node.status == CLAIMED]
            if len(running) == len(lost) or time.monotonic() > deadline:
                break
            time.sleep(min(1.0, self.settings.heartbeat_seconds))
        if time.monotonic() > deadline:
            lost = [describe_node(node) for node in running]
        errors = [
            f"{describe_node(node)}: {node.error}"
            for node in nodes
            if node.status == FAILED and node.error
        ]
        return lost, errors


# ---------------------------------------------------------------------------------------------
# Forming the gang


def lead(
    settings: Settings, job: Claimed, worker: str, requeue: Requeue, join: Join, gpu: str | None
) -> str:
    """Node 0 of a claimed multi-node attempt: open the gang, ask for the other nodes, wait for
    them, run. Returns the job's final status ('queued' when the gang did not form in time)."""
    host = node_address(settings)
    port = free_port(host)
    with session_scope(settings.resolved_database_url) as session:
        rows = crud.open_nodes(
            session,
            job_id=job.job_id,
            attempt=job.attempt,
            nodes=job.nodes,
            worker=worker,
            host=host,
            port=port,
        )
        node = rows[0]
        session.expunge_all()
    supervisor = NodeSupervisor(settings, job, worker, requeue, gpu, node, f"{host}:{port}")
    supervisor.log.write(
        f"attempt {job.attempt} claimed by {worker}: node 0 of {job.nodes}, rendezvous "
        f"{host}:{port}; waiting for {job.nodes - 1} more worker(s)"
    )
    for _ in range(1, job.nodes):
        join(job.job_id, job.attempt)
    formed = wait_formed(settings, supervisor)
    if formed != "formed":
        return formed
    return supervisor.run()


def wait_formed(settings: Settings, supervisor: NodeSupervisor) -> str:
    """Heartbeat node 0 (and the job) until every slot is claimed: 'formed', or the job's new
    state when it was cancelled, went back to the queue, or is another attempt's now."""
    job = supervisor.job
    url = settings.resolved_database_url
    deadline = time.monotonic() + settings.gang_timeout_seconds
    tick = min(1.0, settings.heartbeat_seconds)
    while True:
        status = supervisor.heartbeat()
        with session_scope(url) as session:
            formed = crud.gang_formed(session, job_id=job.job_id, attempt=job.attempt)
        if supervisor.peer_lost:
            # A worker that claimed a slot died before the gang formed: start over.
            return requeue_unformed(settings, supervisor, supervisor.peer_lost)
        if status is None:
            supervisor.log.write("the job is no longer this attempt's; leaving the gang")
            return "lost"
        if status == JobStatus.cancelling.value:
            with session_scope(url) as session:
                crud.return_gang_to_queue(session, job_id=job.job_id, attempt=job.attempt)
            return supervisor.finish("cancelled", None)
        if formed:
            nodes = describe_gang(settings, job)
            supervisor.log.write(f"gang formed: {nodes}")
            return "formed"
        if time.monotonic() > deadline or SHUTTING_DOWN.is_set():
            why = "the worker is shutting down" if SHUTTING_DOWN.is_set() else "the gang timeout"
            return requeue_unformed(settings, supervisor, f"{why} passed")
        time.sleep(tick)


def describe_gang(settings: Settings, job: Claimed) -> str:
    with session_scope(settings.resolved_database_url) as session:
        nodes = crud.list_nodes(session, job_id=job.job_id, attempt=job.attempt)
        return ", ".join(describe_node(node) for node in nodes)


def requeue_unformed(settings: Settings, supervisor: NodeSupervisor, why: str) -> str:
    """The gang did not form: the job back to `queued` with a new message; node 0 is free
    again, so the workers that other half-formed gangs wait for can join them."""
    job = supervisor.job
    url = settings.resolved_database_url
    with session_scope(url) as session:
        back = crud.return_gang_to_queue(session, job_id=job.job_id, attempt=job.attempt)
    if not back:
        return "lost"
    supervisor.log.write(
        f"{why} before every node joined ({describe_gang(settings, job)}); queued again"
    )
    try:
        supervisor.requeue(job.job_id, job.kind, job.params)
    except Exception as exc:
        reason = f"could not be queued again: the broker refused the message ({exc})"
        with session_scope(url) as session:
            crud.unqueue_job(session, job_id=job.job_id, status="interrupted", error=reason)
        return "interrupted"
    return "queued"


def follow(
    settings: Settings, job_id: int, attempt: int, worker: str, requeue: Requeue, gpu: str | None
) -> str:
    """A join message: claim a slot of the attempt, wait for the gang, run this machine's part.
    'ignored' when there is no slot for this worker (the attempt is over, or full)."""
    url = settings.resolved_database_url
    with session_scope(url) as session:
        node = crud.claim_node(
            session, job_id=job_id, attempt=attempt, worker=worker, host=node_address(settings)
        )
        if node is None:
            return "ignored"
        job = crud.get_job(session, job_id=job_id)
        claimed = Claimed(job_id, attempt, job.kind, dict(job.params or {}), job.config["nodes"])
        session.expunge_all()
    endpoint = leader_endpoint(settings, job_id, attempt)
    supervisor = NodeSupervisor(settings, claimed, worker, requeue, gpu, node, endpoint)
    supervisor.log.write(f"{worker} joined attempt {attempt} as node {node.node_rank}")
    deadline = time.monotonic() + settings.gang_timeout_seconds
    while True:
        status = supervisor.heartbeat()
        if status is None:
            supervisor.log.write("the attempt ended before its gang formed")
            return "ignored"
        with session_scope(url) as session:
            if crud.gang_formed(session, job_id=job_id, attempt=attempt):
                break
        if time.monotonic() > deadline:
            # Node 0 returns the job to the queue at the same timeout; this node lets go.
            return "ignored"
        time.sleep(min(1.0, settings.heartbeat_seconds))
    return supervisor.run()


def leader_endpoint(settings: Settings, job_id: int, attempt: int) -> str:
    with session_scope(settings.resolved_database_url) as session:
        nodes = crud.list_nodes(session, job_id=job_id, attempt=attempt)
        leader = nodes[0]
        return f"{leader.host}:{leader.port}"
