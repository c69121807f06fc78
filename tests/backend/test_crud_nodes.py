"""The gang's rows (backend/crud/nodes.py): node 0 opens the slots, other workers claim them with
one conditional UPDATE each, a worker never takes two slots of one attempt, and a gang that did
not form goes back to the queue with its slots abandoned."""

from __future__ import annotations

from backend import crud
from backend.db import session_scope


def _running_job(url: str) -> tuple[int, int]:
    with session_scope(url) as session:
        job, _ = crud.create_job(
            session,
            kind="train",
            name="two machines",
            config={"nodes": 2},
            algorithm="treegrpo",
            preset=None,
            params={},
            progress_total=1,
        )
        claimed = crud.claim_job(session, job_id=job.id, worker="a@host/pid-1")
        assert claimed is not None
        return claimed.id, claimed.attempt


def test_slots_are_claimed_once_each_and_never_twice_by_one_worker(db_url: str) -> None:
    job_id, attempt = _running_job(db_url)
    with session_scope(db_url) as session:
        opened = crud.open_nodes(
            session, job_id=job_id, attempt=attempt, nodes=3, worker="a", host="10.0.0.1", port=7
        )
        assert [(n.node_rank, n.status) for n in opened] == [
            (0, "claimed"),
            (1, "open"),
            (2, "open"),
        ]
        assert not crud.gang_formed(session, job_id=job_id, attempt=attempt)
        # Node 0's worker is in the gang already; so is b after its claim.
        assert (
            crud.claim_node(session, job_id=job_id, attempt=attempt, worker="a", host="h") is None
        )
        b = crud.claim_node(session, job_id=job_id, attempt=attempt, worker="b", host="10.0.0.2")
        assert b is not None and b.node_rank == 1 and b.host == "10.0.0.2"
        assert (
            crud.claim_node(session, job_id=job_id, attempt=attempt, worker="b", host="h") is None
        )
        # A join message of another attempt finds no slot.
        assert (
            crud.claim_node(session, job_id=job_id, attempt=attempt + 1, worker="c", host="h")
            is None
        )
        c = crud.claim_node(session, job_id=job_id, attempt=attempt, worker="c", host="10.0.0.3")
        assert c is not None and c.node_rank == 2
        assert crud.gang_formed(session, job_id=job_id, attempt=attempt)
        assert (
            crud.claim_node(session, job_id=job_id, attempt=attempt, worker="d", host="h") is None
        )

        assert crud.beat_node(session, job_id=job_id, attempt=attempt, node_rank=2)
        assert crud.end_node(
            session, job_id=job_id, attempt=attempt, node_rank=2, status="failed", error="OOM"
        )
        assert not crud.beat_node(session, job_id=job_id, attempt=attempt, node_rank=2)
        nodes = crud.list_nodes(session, job_id=job_id)
        assert [(n.node_rank, n.worker, n.status, n.error) for n in nodes] == [
            (0, "a", "claimed", None),
            (1, "b", "claimed", None),
            (2, "c", "failed", "OOM"),
        ]
        assert nodes[0].port == 7 and nodes[1].port is None


def test_a_gang_that_did_not_form_goes_back_to_the_queue(db_url: str) -> None:
    job_id, attempt = _running_job(db_url)
    with session_scope(db_url) as session:
        crud.open_nodes(
            session, job_id=job_id, attempt=attempt, nodes=2, worker="a", host="h", port=7
        )
        assert crud.return_gang_to_queue(session, job_id=job_id, attempt=attempt)
        assert crud.get_job(session, job_id=job_id).status == "queued"
        assert {n.status for n in crud.list_nodes(session, job_id=job_id)} == {"abandoned"}
        # A late join message finds the attempt over; a second timeout changes nothing.
        assert (
            crud.claim_node(session, job_id=job_id, attempt=attempt, worker="b", host="h") is None
        )
        assert not crud.return_gang_to_queue(session, job_id=job_id, attempt=attempt)
        # The next claim is a new attempt, with no nodes yet.
        again = crud.claim_job(session, job_id=job_id, worker="b")
        assert again is not None and again.attempt == attempt + 1
        assert crud.list_nodes(session, job_id=job_id, attempt=again.attempt) == []
