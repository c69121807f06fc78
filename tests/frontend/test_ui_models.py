"""frontend/models.py: API answers fill the dashboard's dataclasses by their declared types."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ui_factories import job_json

from frontend.client import Job, JobNode, TreeNode, TreeSummary
from frontend.models import parse


@dataclass(frozen=True)
class Item:
    id: int
    name: str
    score: float | None
    when: datetime | None
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    rewards: dict[str, float] | None = None
    node: JobNode | None = None
    role: str = "viewer"


def test_fields_are_coerced_by_their_types_and_bad_values_never_raise() -> None:
    item = parse(
        Item,
        {
            "id": "7",
            "name": 3,
            "score": "0.5",
            "when": "2026-12-06T10:00:00Z",
            "tags": ["a", None, "b"],
            "extra": {"k": 1},
            "rewards": {"x": "0.25", "y": "bad"},
            "node": {"node_rank": 1, "status": "running", "host": "h"},
            "unknown": "ignored",
        },
    )
    assert (item.id, item.name, item.score) == (7, "3", 0.5)
    assert item.when == datetime(2026, 12, 6, 10, tzinfo=UTC)
    assert item.tags == ("a", "b") and item.extra == {"k": 1} and item.rewards == {"x": 0.25}
    assert item.node == JobNode(
        node_rank=1, status="running", worker=None, host="h", heartbeat_at=None, error=None
    )
    assert item.role == "viewer"  # missing: the field's default
    empty = parse(Item, {"id": "x", "score": "nan?", "when": "yesterday", "tags": "a"})
    assert (empty.id, empty.name, empty.score, empty.when, empty.tags) == (0, "", None, None, ())
    assert parse(Item, None).id == 0


def test_a_job_parses_from_its_field_list() -> None:
    job = Job.from_json(job_json(tags=["x"], nodes=[{"node_rank": 0, "status": "done"}]))
    assert job.id == 1 and job.tags == ("x",) and job.nodes[0].status == "done"
    assert job.created_at == datetime(2026, 11, 20, 10, tzinfo=UTC)
    # No `progress` in the answer: step / total, kept within 0..1.
    raw = job_json(progress_step=5, progress_total=4)
    del raw["progress"]
    assert Job.from_json(raw).progress == 1.0


def test_trees_and_their_nodes_parse_from_their_field_lists() -> None:
    summary = TreeSummary.from_json(
        {"id": 4, "job_id": 2, "k": "3", "best_reward": "0.9", "latents_dropped_at": "2026-12-06"}
    )
    assert (summary.id, summary.k, summary.best_reward) == (4, 3, 0.9)
    assert summary.latents_dropped_at == datetime(2026, 12, 6, tzinfo=UTC)
    assert summary.prompt == "" and summary.mean_reward is None
    node = TreeNode.from_json(
        {"id": 9, "parent_id": 8, "rewards": {"a": "0.5", "b": None}, "branch_refusal": "a leaf"}
    )
    assert node.node_index == 9  # an answer without per-tree numbers: the id
    assert node.rewards == {"a": 0.5} and node.branch_refusal == "a leaf"
    assert node.image_url is None and node.is_leaf is False
