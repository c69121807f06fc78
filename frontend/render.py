"""HTML fragments of the dashboard as pure functions: tables, badges, galleries, panels, notices.

Every piece of text that came from a user or the API (names, prompts, errors, config values) goes
through `esc` (html.escape with quotes) before it is placed in markup; numbers are formatted here.
The markup's classes are styled by frontend/style.py.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from frontend.client import DeletedJob, Job, Sample, Tree, TreeNode, artifact_href


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def now_utc() -> datetime:
    return datetime.now(UTC)


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """'12 s ago', '5 min ago', '3 h ago', '2 d ago'."""
    if moment is None:
        return "-"
    seconds = max(0.0, ((now or now_utc()) - moment).total_seconds())
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def fmt(value: float | None, digits: int = 3, signed: bool = False) -> str:
    """A value that rounds to zero shows without a sign: "0.00", never "-0.00" or "+0.00"."""
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    if float(text) == 0:
        return f"{0:.{digits}f}"
    return f"+{text}" if signed and value > 0 else text


def notice(text: str, kind: str = "info") -> str:
    """A message box; kind is info | ok | warn | error."""
    if not text:
        return ""
    kind = kind if kind in ("info", "ok", "warn", "error") else "info"
    role = "alert" if kind == "error" else "status"
    return f'<div class="tg-notice tg-{kind}" role="{role}">{esc(text)}</div>'


def field_error(text: str | None) -> str:
    """The API's (or the form's) message for one field, shown right under it."""
    if not text:
        return ""
    return f'<div class="tg-field-error" role="alert">{esc(text)}</div>'


_STATUS_PHRASES = {
    "queued": "is queued",
    "running": "is running",
    "cancelling": "is stopping (cancel requested)",
    "succeeded": "has succeeded",
    "failed": "has failed",
    "cancelled": "was cancelled",
    "interrupted": "was interrupted",
    "lost": "was lost (its worker stopped answering)",
}


def status_phrase(status: str) -> str:
    """A job status as a verb phrase: "has succeeded", "was cancelled" (never "is succeeded")."""
    return _STATUS_PHRASES.get(status, f"is {status}")


def schedule_facts(job: Job) -> list[tuple[str, str]]:
    """When the next gallery and tree are due (the final epoch always logs both)."""
    sched = job.schedule
    if not sched or job.kind != "train":
        return []
    epochs = sched.get("epochs")
    out = []
    for label, key, every in (
        ("next gallery", "next_gallery_epoch", "sample_every"),
        ("next tree", "next_tree_epoch", "log_tree_every"),
    ):
        due = sched.get(key)
        if due is None:
            text = "none left" if job.status not in ACTIVE else "-"
        else:
            text = f"epoch {due}"
            if epochs is not None and key == "next_gallery_epoch" and due == epochs:
                text += " (the final one)"
            if sched.get(every):
                text += f" · every {sched[every]}"
        out.append((label, text))
    return out


ACTIVE = frozenset({"queued", "running", "cancelling"})


def queue_text(job: Job) -> str:
    """'2nd in the interactive queue' for a queued job with a position."""
    n = job.queue_position or 0
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    lane = f" {job.lane}" if job.lane else ""
    return (
        "next to start" + (f" in the{lane} queue" if lane else "")
        if n == 1
        else (f"{n}{suffix} in the{lane} queue")
    )


def status_badge(status: str) -> str:
    return f'<span class="tg-badge tg-s-{esc(status)}">{esc(status)}</span>'


def progress_bar(job: Job) -> str:
    pct = round(job.progress * 100)
    label = f"{job.progress_step}/{job.progress_total}" if job.progress_total else f"{pct}%"
    return (
        f'<div class="tg-progress" title="{esc(label)}"><div class="tg-progress-fill '
        f'tg-s-{esc(job.status)}" style="width:{pct}%"></div>'
        f'<span class="tg-progress-text">{esc(label)}</span></div>'
    )


def job_label(job: Job) -> str:
    """Plain text (for dropdowns, which show text as text): '#12 name · treegrpo · running'."""
    name = job.name or "(unnamed)"
    return f"#{job.id} {name} · {job.algorithm or job.kind} · {job.status}"


def jobs_table(
    jobs: Sequence[Job],
    *,
    selected: int | None = None,
    now: datetime | None = None,
    empty: str = "No jobs yet: submit one below.",
) -> str:
    """The Runs table: one clickable row per job (`data-job-id`); `empty` says why there is
    none (the caller names the filters)."""
    if not jobs:
        return f'<div class="tg-empty" id="tg-jobs-empty">{esc(empty)}</div>'
    rows = []
    for job in jobs:
        sel = " tg-selected" if job.id == selected else ""
        error = (
            f'<div class="tg-row-error" title="{esc(job.error)}">{esc(_clip(job.error, 90))}</div>'
            if job.error
            else ""
        )
        rows.append(
            f'<tr class="tg-job{sel}" data-job-id="{job.id}" tabindex="0">'
            f'<td class="tg-num">#{job.id}</td>'
            f'<td class="tg-name"><div class="tg-job-name">{esc(job.name or "(unnamed)")}</div>'
            f"{_tags(job)}{error}</td>"
            f"<td>{esc(job.kind)}</td>"
            f"<td>{status_badge(job.status)}</td>"
            f"<td>{progress_bar(job)}</td>"
            f"<td>{esc(job.algorithm)}</td>"
            f"<td>{esc(job.preset or '-')}</td>"
            f'<td class="tg-owner">{esc(job.owner or "-")}</td>'
            f'<td class="tg-num">{fmt(job.latest_reward)}</td>'
            f'<td title="{esc(job.created_at.isoformat() if job.created_at else "")}">'
            f"{esc(age(job.created_at, now))}</td></tr>"
        )
    return (
        '<table class="tg-table tg-jobs"><thead><tr><th>id</th><th>name</th><th>kind</th>'
        "<th>status</th><th>progress</th><th>algorithm</th><th>preset</th><th>owner</th>"
        "<th>reward</th>"
        "<th>created</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _tags(job: Job) -> str:
    if not job.tags:
        return ""
    return (
        '<div class="tg-tags">'
        + "".join(f'<span class="tg-tag">{esc(t)}</span>' for t in job.tags)
        + "</div>"
    )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def job_header(
    job: Job,
    *,
    checkpoint_href: str | None,
    export_href: str | None = None,
    now: datetime | None = None,
    held_out: tuple[float, int] | None = None,
) -> str:
    """The Run tab's summary card. `export_href`: the diffusers LoRA of a LoRA run's latest
    checkpoint (GET /jobs/{id}/export?format=lora), offered beside the checkpoint;
    `held_out`: the last held-out gallery's mean reward and its epoch, shown beside the
    training reward (the noisy mean of one epoch's rollouts)."""
    now = now or now_utc()
    started, finished = job.started_at, job.finished_at
    ran = (finished or now) - started if started else None
    facts = [
        ("status", status_badge(job.status)),
        ("progress", progress_bar(job)),
        ("kind", esc(job.kind)),
        ("algorithm", esc(job.algorithm or "-")),
        ("preset", esc(job.preset or "-")),
        ("owner", esc(job.owner or "-")),
        (
            "held-out reward",
            f"{fmt(held_out[0])} <small>(epoch {held_out[1]})</small>" if held_out else "-",
        ),
        ("training reward (last epoch, noisy)", fmt(job.latest_reward)),
        ("created", esc(age(job.created_at, now))),
        ("running time", esc(duration(ran.total_seconds() if ran else None))),
        ("worker", esc(job.worker or "-")),
        ("attempt", str(job.attempt)),
    ]
    if job.parent_job_id is not None:
        facts.append(("parent job", f"#{job.parent_job_id}"))
    if job.status == "queued" and job.queue_position:
        facts.append(("waiting", esc(queue_text(job))))
    facts += [(label, esc(text)) for label, text in schedule_facts(job)]
    cells = "".join(f'<div class="tg-fact"><span>{k}</span><b>{v}</b></div>' for k, v in facts)
    if checkpoint_href:
        download = (
            f'<a class="tg-button" href="{esc(checkpoint_href)}" download '
            f'data-testid="checkpoint-link">Download the latest checkpoint (zip)</a>'
        )
        if export_href:
            download += (
                f' <a class="tg-button" href="{esc(export_href)}" download '
                f'data-testid="export-link">Download the LoRA for diffusers (zip)</a>'
            )
        elif job.kind == "train":
            download += (
                ' <span class="tg-muted" data-testid="export-hint">A full fine-tune of a '
                "diffusers model exports as a pipeline folder: <code>treegrpo export "
                f"{job.id} --format pipeline --out DIR</code></span>"
            )
    else:
        download = '<span class="tg-muted">No checkpoint saved yet.</span>'
    error = f'<pre class="tg-error-text">{esc(job.error)}</pre>' if job.error else ""
    return (
        f'<div class="tg-card"><div class="tg-card-title">#{job.id} '
        f'<span class="tg-job-name">{esc(job.name or "(unnamed)")}</span></div>'
        f'<div class="tg-facts">{cells}</div>{error}<div class="tg-actions">{download}</div></div>'
    )


def gallery(
    samples: Iterable[Sample],
    *,
    title: str,
    asset_base: str = "",
    pixelated: bool = False,
    empty: str = "No samples for this epoch.",
    sources: Mapping[str, str] | None = None,
) -> str:
    """A grid of sample images with their prompt and reward (images from `sources`, data: URIs
    by image_url, else the artifact URL)."""
    items = []
    for sample in samples:
        href = _src(sample.image_url, sources, asset_base)
        image = (
            f'<img src="{esc(href)}" alt="{esc(sample.prompt)}" loading="lazy"'
            + (' class="tg-pixelated"' if pixelated else "")
            + ">"
            if href
            else '<div class="tg-noimg">no image</div>'
        )
        rewards = ""
        if sample.rewards and len(sample.rewards) > 1:
            rewards = " · ".join(f"{esc(k)} {v:.3f}" for k, v in sample.rewards.items())
            rewards = f'<div class="tg-muted">{rewards}</div>'
        items.append(
            f'<figure class="tg-sample" title="{esc(sample.prompt)}">{image}<figcaption>'
            f'<div class="tg-prompt">{esc(sample.prompt)}</div>'
            f"<div>reward <b>{fmt(sample.reward)}</b></div>{rewards}</figcaption></figure>"
        )
    body = "".join(items) if items else f'<div class="tg-empty">{esc(empty)}</div>'
    return (
        f'<div class="tg-gallery"><div class="tg-gallery-title">{esc(title)}</div>'
        f'<div class="tg-grid">{body}</div></div>'
    )


def _leaves_below(tree: Tree, node: TreeNode) -> list[TreeNode]:
    """Leaves under `node`: the training tree's for a training node, the branch's for a node a
    branch grew (branch results never count as training leaves)."""
    children: dict[int, list[TreeNode]] = {}
    pool = tree.nodes if node.branch_job_id is None else tree.all_nodes
    for n in pool:
        if n.parent_id is not None:
            children.setdefault(n.parent_id, []).append(n)
    out, stack, seen = [], [node], set()
    while stack:
        current = stack.pop()
        if current.id in seen:
            continue
        seen.add(current.id)
        below = children.get(current.id, [])
        if not below and current.id != node.id:
            out.append(current)
        stack.extend(below)
    return out


def _node_facts(node: TreeNode) -> list[tuple[str, str]]:
    facts = [
        ("node", f"{node.node_index} (id {node.id})"),
        ("step", str(node.step_index)),
        ("t", fmt(node.t, 4)),
        ("sigma", fmt(node.sigma, 4)),
        (
            "made by",
            "SDE step" if node.made_by_sde else ("root" if node.parent_id is None else "ODE step"),
        ),
        ("log-prob", fmt(node.log_prob, 4)),
        ("reward", fmt(node.reward, 4)),
        ("advantage", fmt(node.advantage, 4, signed=True)),
        ("leaf", "yes" if node.is_leaf else "no"),
    ]
    if node.rewards:
        for name, value in node.rewards.items():
            facts.append((f"reward: {name}", fmt(value, 4)))
    if node.branch_job_id is not None:
        grown = f"branch job #{node.branch_job_id}"
        facts.append(("grown by", f"{grown} with {node.grown_with}" if node.grown_with else grown))
    return facts


def _src(url: str | None, sources: Mapping[str, str] | None, asset_base: str) -> str | None:
    if url and sources and url in sources:
        return sources[url]
    return artifact_href(url, asset_base)


def node_panel(
    tree: Tree,
    node_id: int | None,
    *,
    asset_base: str = "",
    pixelated: bool = False,
    image_src: str | None = None,
    sources: Mapping[str, str] | None = None,
    full_href: str | None = None,
) -> str:
    """The inspector's side panel: the node's predicted image (`image_src`, else its artifact
    URL), its numbers, and the path from the root (every recorded state on the way, each with its
    image from `sources`). `full_href`: the full-size file's link (frontend/links.py: one that
    works with reads closed), else its artifact URL."""
    node = tree.node(node_id) if node_id is not None else None
    if node is None:
        return (
            '<div class="tg-panel tg-empty">Click a node of the tree to see its predicted '
            "image, step, t/sigma, log-prob, reward, advantage and its path from the root.</div>"
        )
    href = image_src or artifact_href(node.image_url, asset_base)
    full = full_href or artifact_href(node.image_url, asset_base)
    pix = ' class="tg-pixelated"' if pixelated else ""
    image = (
        f'<img src="{esc(href)}" alt="predicted image of node {node.node_index}"{pix}>'
        # The stored file is the model's own output, often smaller than this preview (64 px
        # against 176 px): it is offered as the original, never as a "full-size" image.
        f'<a class="tg-muted" href="{esc(full)}" target="_blank" rel="noopener" '
        'title="the image exactly as the model made it, at its native resolution; the '
        'preview above is scaled to fit">original file (native resolution)</a>'
        if href and full
        else '<div class="tg-noimg">no image</div>'
    )
    facts = _node_facts(node)
    leaves = [n for n in _leaves_below(tree, node) if n.reward is not None]
    if leaves:
        rewards = [n.reward for n in leaves if n.reward is not None]
        facts += [
            ("leaves below", str(len(leaves))),
            ("their reward", f"mean {sum(rewards) / len(rewards):.4f} · best {max(rewards):.4f}"),
        ]
    rows = "".join(
        f'<tr><th>{esc(k)}</th><td data-field="{esc(k)}">{esc(v)}</td></tr>' for k, v in facts
    )
    path = tree.path_to(node.id)
    steps = []
    for hop in path:
        hop_href = _src(hop.image_url, sources, asset_base)
        thumb = f'<img src="{esc(hop_href)}" alt=""{pix}>' if hop_href else ""
        extra = []
        if hop.advantage is not None:
            extra.append(f"A {fmt(hop.advantage, 2, signed=True)}")
        if hop.reward is not None:
            extra.append(f"R {hop.reward:.2f}")
        kind = "SDE" if hop.made_by_sde else ("root" if hop.parent_id is None else "ODE")
        current = " tg-current" if hop.id == node.id else ""
        steps.append(
            f'<li class="tg-hop{current}" data-node-id="{hop.id}" title="node {hop.node_index}">'
            f"{thumb}<span>step {hop.step_index}</span><span>{kind}</span>"
            f"<span>{esc(' '.join(extra))}</span></li>"
        )
    return (
        f'<div class="tg-panel" data-node-id="{node.id}"><div class="tg-panel-top">'
        f'<div class="tg-panel-image">{image}</div>'
        f'<table class="tg-kv">{rows}</table></div>'
        f'<div class="tg-path-title">Path from the root ({len(path)} states; '
        f"click one to select it)</div>"
        f'<ol class="tg-path">{"".join(steps)}</ol></div>'
    )


def tree_caption(tree: Tree) -> str:
    """The tree's one-line summary: its training leaves only (branch results are counted apart,
    never in the leaves, best or mean)."""
    s = tree.summary
    leaves = tree.training_leaves()
    rewards = [n.reward for n in leaves if n.reward is not None]
    count = len(leaves) if tree.nodes else s.leaves
    best = max(rewards) if rewards else s.best_reward
    mean = sum(rewards) / len(rewards) if rewards else s.mean_reward
    jobs = sorted({n.branch_job_id for n in tree.branches if n.branch_job_id is not None})
    extra = (
        f" · plus {len(tree.branches)} branch states from {len(jobs)} branch "
        f"job{'s' if len(jobs) != 1 else ''} (not counted)"
        if jobs
        else ""
    )
    return (
        f'<div class="tg-tree-caption" data-leaves="{count}"><b>Tree {s.id}</b> · job #{s.job_id} '
        f"· epoch {s.epoch} · tree {s.index} · prompt <q>{esc(s.prompt)}</q> · k={s.k}, "
        f"d={s.depth}, T={s.steps}, window at step {s.window_start} · backup {esc(s.backup)} · "
        f'<span data-field="leaves">{count} leaves</span> · best reward '
        f'<span data-field="best">{fmt(best)}</span> · mean '
        f'<span data-field="mean">{fmt(mean)}</span>{extra}</div>'
    )


@dataclass(frozen=True)
class CompareRow:
    job: Job
    final_reward: float | None
    best_reward: float | None
    target: float | None
    seconds_to_target: float | None
    images_to_target: float | None
    seconds_per_epoch: float | None
    speedup: float | None  # slowest run's time to target / this run's


def compare_table(
    rows: Sequence[CompareRow], *, metric: str, cpu_time: bool = False, smoothing: float = 0.0
) -> str:
    """`cpu_time`: times are the training process's CPU seconds (every run logged time/epoch_cpu),
    else wall-clock; `smoothing`: the EMA the final, best and target columns read."""
    if not rows:
        return '<div class="tg-empty">Pick runs to compare.</div>'
    body = []
    for row in rows:
        job = row.job
        body.append(
            f'<tr data-job-id="{job.id}"><td class="tg-num">#{job.id}</td>'
            f'<td class="tg-job-name">{esc(job.name or "(unnamed)")}</td>'
            f"<td>{esc(job.algorithm)}</td><td>{esc(job.preset or '-')}</td>"
            f"<td>{status_badge(job.status)}</td>"
            f'<td class="tg-num">{fmt(row.final_reward)}</td>'
            f'<td class="tg-num">{fmt(row.best_reward)}</td>'
            f'<td class="tg-num">{esc(duration(row.seconds_to_target)) if row.seconds_to_target is not None else "not reached"}</td>'
            f'<td class="tg-num">{"-" if row.images_to_target is None else f"{row.images_to_target:,.0f}"}</td>'
            f'<td class="tg-num">{esc(duration(row.seconds_per_epoch))}</td>'
            f'<td class="tg-num">{"-" if row.speedup is None else f"{row.speedup:.2f}x"}</td></tr>'
        )
    target = rows[0].target
    smoothed = smoothing > 0
    curve = f"the curve smoothed with EMA {smoothing:.2f}" if smoothed else "the raw curve"
    clock = (
        "CPU time of the training process (load on the machine barely moves it)"
        if cpu_time
        else "wall-clock of training (not every run logged its CPU time; load on the machine "
        "counts)"
    )
    caption = (
        f"Time to reach {esc(metric)} ≥ {fmt(target)} on {curve}, in {clock}; speed-up is "
        "relative to the slowest run that reached it."
        if target is not None
        else f"No target reward. Final and best read {curve}."
    )
    tag = " (smoothed)" if smoothed else ""
    unit = "CPU " if cpu_time else ""
    return (
        f'<table class="tg-table tg-compare" data-clock="{"cpu" if cpu_time else "wall"}">'
        f"<caption>{caption}</caption><thead><tr><th>id</th>"
        "<th>name</th><th>algorithm</th><th>preset</th><th>status</th>"
        f"<th>final{tag}</th><th>best{tag}</th><th>{unit}time to target</th>"
        f"<th>images to target</th><th>{unit}time / epoch</th><th>speed-up</th>"
        "</tr></thead><tbody>" + "".join(body) + "</tbody></table>"
    )


def deleted_list(jobs: Sequence[DeletedJob], count: int, now: datetime | None = None) -> str:
    """The recently deleted runs, each with a Restore button (`data-restore-id`) and when it
    will be purged for good."""
    if not jobs:
        return '<div class="tg-muted" id="tg-deleted-empty">No deleted run can be restored.</div>'
    rows = []
    for job in jobs:
        due = job.purge_after
        left = (due - (now or now_utc())).total_seconds() if due else None
        when = (
            "purged at the next check"
            if left is not None and left <= 0
            else f"restorable for {duration(left)}"
            if left is not None
            else ""
        )
        rows.append(
            f'<tr data-deleted-id="{job.id}"><td class="tg-num">#{job.id}</td>'
            f'<td class="tg-job-name">{esc(job.name or "(unnamed)")}</td>'
            f"<td>{esc(job.kind)}</td><td>{status_badge(job.status)}</td>"
            f"<td>deleted {esc(age(job.deleted_at, now))}; {esc(when)}</td>"
            f'<td><button class="tg-restore" data-restore-id="{job.id}">Restore</button></td></tr>'
        )
    more = (
        f'<div class="tg-muted">The latest {len(jobs)} of {count}.</div>'
        if count > len(jobs)
        else ""
    )
    return (
        '<table class="tg-table" id="tg-deleted-table"><tbody>'
        + "".join(rows)
        + "</tbody></table>"
        + more
    )


def watch_notice(watch: Mapping[str, object], job: Job | None = None) -> str:
    """The notice about a job an action or the form made: {"job_id", "text", "status"} (and
    the queue position while it waits)."""
    status = str(watch.get("status") or "")
    text = f"{watch['text']} Job #{watch['job_id']} {status_phrase(status)}"
    if job is not None and status == "queued" and job.queue_position:
        text += f" ({queue_text(job)})"
    kind = "error" if status in ("failed", "lost") else "ok"
    return notice(text + ".", kind)
