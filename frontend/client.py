"""The dashboard's one HTTP client for the TreeGRPO REST API (docs/API.md).

Every tab calls the backend through `ApiClient`; nothing in frontend/ imports backend code. Results
come back as small frozen dataclasses, declared once as field lists and filled by their types
(frontend/models.py `parse`: a new API field costs one line); every failure is an `ApiError` whose `message` is fit to show
a user and whose `field_errors` map a form field (a dotted config name such as `tree.k`, or `name`)
to the API's 422 message for it.

The key is the user's own: `X-API-Key` is sent on every call, reads included, when one is given;
a mutating call without one fails here with `KeyRequired` before any request is made, and a read
that a closed studio refuses without one says that reads need a key.

    client = ApiClient("http://127.0.0.1:8000", api_key="...")
    job = client.create_job(kind="train", name="digits run", preset="digits-treegrpo")
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from frontend.models import parse, parse_float

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT_S = 10.0

STATUSES = (
    "queued",
    "running",
    "cancelling",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
    "lost",
)
ACTIVE_STATUSES = frozenset({"queued", "running", "cancelling"})
RESUMABLE_STATUSES = frozenset({"interrupted", "failed", "cancelled", "lost"})
CANCELLABLE_STATUSES = frozenset({"queued", "running"})


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A failed API call. `status` is the HTTP status (0 when the API could not be reached)."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        title: str = "",
        detail: str = "",
        field_errors: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.title = title
        self.detail = detail
        self.field_errors: dict[str, str] = dict(field_errors or {})


class KeyRequired(ApiError):
    """A mutating call was attempted without an API key (no request was sent)."""


class Unauthorized(ApiError):
    """The API refused the key (401) or its permissions (403)."""


class NotFound(ApiError):
    """404: the job, tree, node or file does not exist."""


class Conflict(ApiError):
    """409: the job is in a state that does not allow the action."""


class ValidationFailed(ApiError):
    """422: the API rejected the request's fields (see `field_errors`)."""


class Unreachable(ApiError):
    """No answer from the API (connection refused, timeout)."""


KEY_REQUIRED_MESSAGE = (
    "An API key is needed for this action. Paste your key in the API key field at the top "
    "(in the embedded deployment, `treegrpo up` prints one at start-up; `treegrpo api-key create` "
    "makes another)."
)


READ_KEY_MESSAGE = (
    "This studio needs an API key to read too (its reads are closed: TREEGRPO_READS_REQUIRE_KEY). "
    "Paste your key in the API key field at the top to see runs, trees and images."
)


def field_name(loc: Sequence[Any]) -> str:
    """A 422 `loc` as the form's field name: ["body", "config", "tree.k"] -> "tree.k",
    ["body", "config", "tree", "k"] -> "tree.k", ["body", "name"] -> "name"."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    if parts and parts[0] == "config" and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts) or "request"


def _error_from_response(response: httpx.Response) -> ApiError:
    status = response.status_code
    title, detail = "", ""
    fields: dict[str, str] = {}
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        raw = body.get("detail")
        if isinstance(raw, list):  # FastAPI's validation shape
            for item in raw:
                if not isinstance(item, dict):
                    continue
                name = field_name(item.get("loc") or [])
                msg = str(item.get("msg", "invalid value"))
                fields[name] = f"{fields[name]}; {msg}" if name in fields else msg
        elif raw is not None:
            detail = str(raw)
        title = str(body.get("title") or "")
    elif response.text:
        detail = response.text.strip()[:500]
    reason = title or response.reason_phrase or "error"
    if fields:
        summary = "; ".join(f"{name}: {msg}" for name, msg in fields.items())
        message = f"The API rejected the request ({status}): {summary}"
    else:
        message = f"{reason} ({status})" + (f": {detail}" if detail else "")
    kwargs: dict[str, Any] = {
        "status": status,
        "title": title,
        "detail": detail,
        "field_errors": fields,
    }
    if status in (401, 403):
        why = detail or title or "the key is missing, wrong or revoked"
        return Unauthorized(
            f"The API refused the key ({status}: {why}). Check the API key field at the top.",
            **kwargs,
        )
    if status == 404:
        return NotFound(message, **kwargs)
    if status == 409:
        return Conflict(message, **kwargs)
    if status == 422:
        return ValidationFailed(message, **kwargs)
    return ApiError(message, **kwargs)


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class Me:
    """The caller's key, as GET /me describes it."""

    key_id: int
    name: str
    role: str = "viewer"  # admin | member | viewer

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Me:
        return parse(cls, data)


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    name: str
    status: str
    preset: str | None
    algorithm: str
    config: dict[str, Any]
    params: dict[str, Any]
    parent_job_id: int | None
    created_at: datetime | None
    updated_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    worker: str | None
    attempt: int
    progress_step: int
    progress_total: int
    progress: float
    error: str | None
    checkpoint_path: str | None
    latest_reward: float | None
    tags: tuple[str, ...] = ()
    notes: str = ""
    queue_position: int | None = None  # while queued: 1 = next to start in its lane
    lane: str = ""  # training | interactive
    schedule: dict[str, Any] = field(default_factory=dict)  # next gallery / tree epochs
    owner_key_id: int | None = None  # the key that submitted it (None: made before roles)
    owner: str | None = None  # that key's name
    nodes: tuple[JobNode, ...] = ()  # a multi-node job's machines (latest attempt)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        job = parse(cls, data)
        progress = parse_float(data.get("progress"))
        if progress is None:
            progress = job.progress_step / job.progress_total if job.progress_total else 0.0
        return replace(job, progress=max(0.0, min(1.0, progress)))

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES


@dataclass(frozen=True)
class JobNode:
    """One machine of a multi-node job (GET /jobs/{id} `nodes`)."""

    node_rank: int
    status: str
    worker: str | None
    host: str | None
    heartbeat_at: datetime | None
    error: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobNode:
        return parse(cls, data)


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    count: int


@dataclass(frozen=True)
class MetricPoint:
    step: int
    name: str
    value: float


@dataclass(frozen=True)
class MetricsPage:
    points: list[MetricPoint]
    count: int
    names: list[str]


@dataclass(frozen=True)
class LogChunk:
    text: str
    next_offset: int


@dataclass(frozen=True)
class TreeSummary:
    id: int
    job_id: int
    epoch: int
    index: int
    prompt: str
    seed: int
    window_start: int
    k: int
    depth: int
    steps: int
    backup: str
    created_at: datetime | None
    nodes: int
    leaves: int
    best_reward: float | None
    mean_reward: float | None
    # When the operator's retention deleted the tree's latents (it can no longer be branched).
    latents_dropped_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TreeSummary:
        return parse(cls, data)


@dataclass(frozen=True)
class TreePage:
    trees: list[TreeSummary]
    count: int


@dataclass(frozen=True)
class TreeNode:
    id: int
    node_index: int
    parent_id: int | None
    depth: int
    step_index: int
    t: float | None
    sigma: float | None
    is_leaf: bool
    log_prob: float | None
    reward: float | None
    rewards: dict[str, float] | None
    advantage: float | None
    image_url: str | None
    branch_job_id: int | None
    # A branch node's policy, as its branch job recorded it (BranchPublic.policy.text).
    grown_with: str | None = None
    # Why the API refuses a branch from it ("is a leaf: ...", "has no stored latent: ..."):
    # TreeNodePublic.branch_refusal, the rule the branch submission applies. None: it can.
    branch_refusal: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TreeNode:
        if data.get("node_index") is None:  # answers from before nodes were numbered per tree
            data = {**data, "node_index": data.get("id")}
        return parse(cls, data)

    @property
    def made_by_sde(self) -> bool:
        """Nodes drawn by a stochastic step carry the log-prob of that draw."""
        return self.log_prob is not None


def _branch_nodes(raw: Any) -> list[TreeNode]:
    """Branch results (docs/API.md, BranchPublic): groups `{job_id, node_id,
    from_branch_node_id, nodes}` whose nodes have their own id space. Here a branch node's id
    is negated (-7 for branch node 7), so it never collides with a training node's id; a node
    with no parent hangs from the group's origin (a training node, or a negated branch node)."""
    out: list[TreeNode] = []
    for group in raw if isinstance(raw, list) else []:
        if not isinstance(group, Mapping) or not isinstance(group.get("nodes"), list):
            continue
        job = group.get("job_id")
        origin_branch = _opt_int(group.get("from_branch_node_id"))
        origin = -origin_branch if origin_branch is not None else _opt_int(group.get("node_id"))
        policy = group.get("policy")
        grown_with = policy.get("text") if isinstance(policy, Mapping) else None
        for n in group["nodes"]:
            if not isinstance(n, Mapping):
                continue
            node = dict(n)
            node["id"] = -_int(n.get("id"))
            parent = _opt_int(n.get("parent_id"))
            node["parent_id"] = -parent if parent is not None else origin
            node["branch_job_id"] = job
            node["grown_with"] = grown_with
            out.append(TreeNode.from_json(node))
    return out


@dataclass(frozen=True)
class Tree:
    """A logged tree: `nodes` are the training tree's (never changed by a branch); `branches`
    are the nodes later grown from it by "branch again" (each has its `branch_job_id`)."""

    summary: TreeSummary
    nodes: list[TreeNode]
    branches: list[TreeNode] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tree:
        parsed = [TreeNode.from_json(n) for n in data.get("nodes") or [] if isinstance(n, Mapping)]
        # Older APIs mixed branch results into the tree's nodes: keep them apart here.
        nodes = [n for n in parsed if n.branch_job_id is None]
        branches = [n for n in parsed if n.branch_job_id is not None]
        known = {n.id for n in branches}
        branches += [n for n in _branch_nodes(data.get("branches")) if n.id not in known]
        return cls(summary=TreeSummary.from_json(data), nodes=nodes, branches=branches)

    @property
    def id(self) -> int:
        return self.summary.id

    @property
    def all_nodes(self) -> list[TreeNode]:
        return [*self.nodes, *self.branches]

    def training_leaves(self) -> list[TreeNode]:
        return [n for n in self.nodes if n.is_leaf]

    def node(self, node_id: int) -> TreeNode | None:
        for node in self.all_nodes:
            if node.id == node_id:
                return node
        return None

    def path_to(self, node_id: int) -> list[TreeNode]:
        """The nodes from the root down to `node_id` (empty when it is not in the tree)."""
        by_id = {n.id: n for n in self.all_nodes}
        path: list[TreeNode] = []
        current = by_id.get(node_id)
        while current is not None and len(path) <= len(by_id):
            path.append(current)
            current = by_id.get(current.parent_id) if current.parent_id is not None else None
        return path[::-1]


@dataclass(frozen=True)
class Sample:
    id: int
    epoch: int
    index: int
    prompt: str
    reward: float | None
    rewards: dict[str, float] | None
    image_url: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sample:
        return parse(cls, data)


@dataclass(frozen=True)
class SamplesPage:
    samples: list[Sample]
    count: int
    epochs: list[int]


@dataclass(frozen=True)
class Preset:
    name: str
    config: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# The client
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeletedJob:
    """GET /jobs/deleted's item: a deleted run that can be restored until `purge_after`."""

    id: int
    name: str
    kind: str
    status: str
    algorithm: str
    deleted_at: datetime | None
    purge_after: datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeletedJob:
        return parse(cls, data)


class ApiClient:
    """Synchronous client; one per call site is cheap (pass a shared `httpx.Client` to pool).

    `base_url` is the API's root (scheme://host:port[/prefix]); routes live under /api/v1.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = (api_key or "").strip() or None
        self.timeout = timeout
        self._http = http or httpx.Client(transport=transport, timeout=timeout)

    # -- plumbing ------------------------------------------------------------------------------

    def url(self, route: str) -> str:
        return f"{self.base_url}{API_PREFIX}{route}"

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        headers.update(extra or {})
        return headers

    def _request(
        self,
        method: str,
        route: str,
        *,
        params: Any = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        mutating: bool = False,
    ) -> httpx.Response:
        if mutating and not self.api_key:
            raise KeyRequired(KEY_REQUIRED_MESSAGE, status=401)
        try:
            response = self._http.request(
                method,
                self.url(route),
                params=params,
                json=body,
                headers=self._headers(headers),
                timeout=self.timeout,
            )
        except httpx.TimeoutException as exc:
            raise Unreachable(
                f"The API at {self.base_url} did not answer in {self.timeout:g} s ({exc.__class__.__name__})."
            ) from exc
        except httpx.HTTPError as exc:
            raise Unreachable(
                f"The API at {self.base_url} could not be reached ({exc.__class__.__name__}: {exc})."
            ) from exc
        if response.status_code == 401 and not self.api_key:
            raise Unauthorized(READ_KEY_MESSAGE, status=401)
        if response.status_code >= 400:
            raise _error_from_response(response)
        return response

    def me(self) -> Me:
        """GET /me: the key's name and role (ApiError 401 for a missing or unknown key)."""
        return Me.from_json(self._json("GET", "/me"))

    def reads_need_key(self) -> bool:
        """Whether this API answers reads without a key with 401 (reads closed)."""
        response = self._http.request(
            "GET", self.url("/jobs"), params={"limit": 1}, timeout=self.timeout
        )
        return response.status_code == 401

    def _json(self, method: str, route: str, **kwargs: Any) -> Any:
        response = self._request(method, route, **kwargs)
        try:
            return response.json()
        except (ValueError, json.JSONDecodeError) as exc:
            raise ApiError(
                f"The API answered {method} {route} with something that is not JSON.",
                status=response.status_code,
            ) from exc

    @staticmethod
    def _data(payload: Any) -> list[Any]:
        data = payload.get("data") if isinstance(payload, Mapping) else None
        return list(data) if isinstance(data, list) else []

    # -- jobs ----------------------------------------------------------------------------------

    def list_jobs(
        self,
        *,
        statuses: Iterable[str] = (),
        kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
        q: str | None = None,
        tags: Iterable[str] = (),
    ) -> JobPage:
        params: list[tuple[str, str | int]] = [("status", s) for s in statuses]
        if kind:
            params.append(("kind", kind))
        if q:
            params.append(("q", q))
        params += [("tag", t) for t in tags]
        params += [("limit", limit), ("offset", offset)]
        payload = self._json("GET", "/jobs", params=params)
        jobs = [Job.from_json(j) for j in self._data(payload) if isinstance(j, Mapping)]
        return JobPage(jobs=jobs, count=_int(payload.get("count"), len(jobs)))

    def get_job(self, job_id: int) -> Job:
        return Job.from_json(self._json("GET", f"/jobs/{int(job_id)}"))

    def create_job(
        self,
        *,
        kind: str = "train",
        name: str | None = None,
        preset: str | None = None,
        config: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        body: dict[str, Any] = {"kind": kind, "preset": preset, "config": dict(config or {})}
        if name:
            body["name"] = name
        if params:
            body["params"] = dict(params)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return Job.from_json(self._json("POST", "/jobs", body=body, headers=headers, mutating=True))

    def cancel_job(self, job_id: int) -> Job:
        return Job.from_json(self._json("POST", f"/jobs/{int(job_id)}/cancel", mutating=True))

    def resume_job(self, job_id: int) -> Job:
        return Job.from_json(self._json("POST", f"/jobs/{int(job_id)}/resume", mutating=True))

    def update_job(
        self,
        job_id: int,
        *,
        name: str | None = None,
        tags: Sequence[str] | None = None,
        notes: str | None = None,
    ) -> Job:
        """PATCH: rename, set the tags (the whole list) or the notes; None leaves one as is."""
        body = {
            k: v for k, v in (("name", name), ("tags", tags), ("notes", notes)) if v is not None
        }
        if tags is not None:
            body["tags"] = list(tags)
        return Job.from_json(self._json("PATCH", f"/jobs/{int(job_id)}", body=body, mutating=True))

    def delete_job(self, job_id: int) -> None:
        """Soft delete (409 while the job is queued, running or cancelling)."""
        self._request("DELETE", f"/jobs/{int(job_id)}", mutating=True)

    def deleted_jobs(self, *, limit: int = 50) -> tuple[list[DeletedJob], int]:
        """GET /jobs/deleted: deleted runs that can still be restored, latest first; (page,
        count)."""
        payload = self._json("GET", "/jobs/deleted", params={"limit": limit})
        jobs = [DeletedJob.from_json(j) for j in self._data(payload) if isinstance(j, Mapping)]
        return jobs, _int(payload.get("count"), len(jobs))

    def restore_job(self, job_id: int) -> Job:
        """Undo a delete (409 once the run's artifacts were purged)."""
        return Job.from_json(self._json("POST", f"/jobs/{int(job_id)}/restore", mutating=True))

    def compare_gallery(self, job_ids: Sequence[int], *, epoch: int | None = None) -> Any:
        """The runs' held-out galleries at one epoch (same prompts and seeds), as JSON."""
        params: list[tuple[str, int]] = [("job_id", int(j)) for j in job_ids]
        if epoch is not None:
            params.append(("epoch", int(epoch)))
        return self._json("GET", "/compare/gallery", params=params)

    def metrics(
        self,
        job_id: int,
        *,
        names: Iterable[str] = (),
        since_step: int | None = None,
        limit: int | None = None,
    ) -> MetricsPage:
        params: list[tuple[str, str | int]] = [("name", n) for n in names]
        if since_step is not None:
            params.append(("since_step", since_step))
        if limit is not None:
            params.append(("limit", limit))
        payload = self._json("GET", f"/jobs/{int(job_id)}/metrics", params=params)
        points = []
        for item in self._data(payload):
            if not isinstance(item, Mapping):
                continue
            value = parse_float(item.get("value"))
            if value is None:
                continue
            points.append(
                MetricPoint(step=_int(item.get("step")), name=str(item.get("name")), value=value)
            )
        names_out = payload.get("names") if isinstance(payload, Mapping) else None
        return MetricsPage(
            points=points,
            count=_int(payload.get("count"), len(points)),
            names=[str(n) for n in names_out] if isinstance(names_out, list) else [],
        )

    def logs(self, job_id: int, *, offset: int = 0) -> LogChunk:
        response = self._request(
            "GET", f"/jobs/{int(job_id)}/logs", params={"offset": max(0, int(offset))}
        )
        text = response.text
        next_offset = _int(response.headers.get("X-Next-Offset"), offset + len(response.content))
        return LogChunk(text=text, next_offset=next_offset)

    def trees(
        self, job_id: int, *, epoch: int | None = None, limit: int = 200, offset: int = 0
    ) -> TreePage:
        params: dict[str, int] = {"limit": limit, "offset": offset}
        if epoch is not None:
            params["epoch"] = epoch
        payload = self._json("GET", f"/jobs/{int(job_id)}/trees", params=params)
        trees = [TreeSummary.from_json(t) for t in self._data(payload) if isinstance(t, Mapping)]
        return TreePage(trees=trees, count=_int(payload.get("count"), len(trees)))

    def samples(
        self, job_id: int, *, epoch: int | None = None, limit: int = 200, offset: int = 0
    ) -> SamplesPage:
        params: dict[str, int] = {"limit": limit, "offset": offset}
        if epoch is not None:
            params["epoch"] = epoch
        payload = self._json("GET", f"/jobs/{int(job_id)}/samples", params=params)
        samples = [Sample.from_json(s) for s in self._data(payload) if isinstance(s, Mapping)]
        epochs = payload.get("epochs") if isinstance(payload, Mapping) else None
        return SamplesPage(
            samples=samples,
            count=_int(payload.get("count"), len(samples)),
            epochs=sorted(_int(e) for e in epochs) if isinstance(epochs, list) else [],
        )

    # -- trees ---------------------------------------------------------------------------------

    def tree(self, tree_id: int) -> Tree:
        return Tree.from_json(self._json("GET", f"/trees/{int(tree_id)}"))

    def branch(self, tree_id: int, node_id: int, *, k: int = 3) -> Job:
        """Regrow k children from a node; a negative `node_id` is a branch node (see Tree)."""
        where = f"nodes/{int(node_id)}" if node_id >= 0 else f"branch-nodes/{-int(node_id)}"
        return Job.from_json(
            self._json(
                "POST",
                f"/trees/{int(tree_id)}/{where}/branch",
                body={"k": int(k)},
                mutating=True,
            )
        )

    # -- catalogues ----------------------------------------------------------------------------

    def presets(self) -> list[Preset]:
        out = []
        for item in self._data(self._json("GET", "/presets")):
            if isinstance(item, Mapping) and item.get("name"):
                out.append(Preset(name=str(item["name"]), config=_dict(item.get("config"))))
        return out

    def models(self) -> list[str]:
        return [str(m) for m in self._data(self._json("GET", "/models"))]

    def rewards(self) -> list[str]:
        return [str(r) for r in self._data(self._json("GET", "/rewards"))]

    def prompt_sets(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for item in self._data(self._json("GET", "/prompt-sets")):
            if isinstance(item, Mapping) and item.get("name"):
                prompts = item.get("prompts")
                out[str(item["name"])] = (
                    [str(p) for p in prompts] if isinstance(prompts, list) else []
                )
        return out

    def health(self) -> bool:
        payload = self._json("GET", "/health")
        return isinstance(payload, Mapping) and payload.get("status") == "ok"

    def artifact(self, image_url: str) -> tuple[bytes, str]:
        """The bytes and content type of an `image_url` (/api/v1/artifacts/...)."""
        prefix = f"{API_PREFIX}/artifacts/"
        if not image_url.startswith(prefix):
            raise ApiError(f"not an artifact URL of this API: {image_url!r}")
        route = "/artifacts/" + quote(image_url[len(prefix) :], safe="/")
        response = self._request("GET", route, headers={"Accept": "*/*"})
        return response.content, response.headers.get("content-type", "")

    # -- links for the browser -----------------------------------------------------------------

    def checkpoint_route(self, job_id: int) -> str:
        return f"{API_PREFIX}/jobs/{int(job_id)}/checkpoint"


def artifact_href(image_url: str | None, public_base: str = "") -> str | None:
    """The URL a browser loads an `image_url` from: the API's own `/api/v1/artifacts/...` path,
    prefixed with the API's public origin when the UI is served from elsewhere."""
    if not image_url:
        return None
    if image_url.startswith(("http://", "https://")):
        return image_url
    path = image_url if image_url.startswith("/") else f"{API_PREFIX}/artifacts/{image_url}"
    # Keep the path's slashes; escape anything a URL may not carry raw.
    return public_base.rstrip("/") + quote(path, safe="/:@!$&'()*+,;=-._~%")
