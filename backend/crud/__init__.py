"""Keyword-only CRUD shared by the API and the workers. Each function takes a Session first."""

from backend.crud.api_keys import create_api_key, list_api_keys, revoke_api_key, verify_api_key
from backend.crud.jobs import (
    claim_job,
    count_active,
    create_job,
    finish_job,
    get_job,
    heartbeat,
    list_jobs,
    mark_stale_lost,
    request_cancel,
    request_resume,
    set_checkpoint,
    stale_cutoff,
)
from backend.crud.metrics import (
    delete_metrics_after,
    last_step,
    latest_values,
    list_metrics,
    metric_names,
    upsert_metrics,
)
from backend.crud.samples import add_samples, list_samples, sample_epochs
from backend.crud.trees import add_branch_nodes, add_tree, get_node, get_tree, list_trees

__all__ = [
    "add_branch_nodes",
    "add_samples",
    "add_tree",
    "claim_job",
    "count_active",
    "create_api_key",
    "create_job",
    "delete_metrics_after",
    "finish_job",
    "get_job",
    "get_node",
    "get_tree",
    "heartbeat",
    "last_step",
    "latest_values",
    "list_api_keys",
    "list_jobs",
    "list_metrics",
    "list_samples",
    "list_trees",
    "mark_stale_lost",
    "metric_names",
    "request_cancel",
    "request_resume",
    "revoke_api_key",
    "sample_epochs",
    "set_checkpoint",
    "stale_cutoff",
    "upsert_metrics",
    "verify_api_key",
]
