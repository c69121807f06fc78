"""The Runs tab: the jobs table (filtered by status, kind, name and tags; refreshed every few
seconds while the tab is shown), cancel / resume / delete with an in-page confirmation that
names the job it acts on, the selected run's name, tags and notes, the recently deleted runs
with Restore, and the submit form (frontend/submit.py).

`build` lays out and wires; the handlers below are plain functions of an ApiClient and the
event's values (tests/frontend/test_ui_runs.py calls them on a mock transport).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from frontend import access, render, submit
from frontend.client import (
    ACTIVE_STATUSES,
    CANCELLABLE_STATUSES,
    KEY_REQUIRED_MESSAGE,
    RESUMABLE_STATUSES,
    STATUSES,
    ApiClient,
    ApiError,
    Job,
)
from frontend.shared import QUIET, TAB_RUN, TAB_RUNS, TAB_TREE, Shared, as_int, show_tab_js
from frontend.static import read_static

REFRESH_SECONDS = 3.0
PAGE = 50
ACTIONS = ("cancel", "resume", "delete")
PAST = {"cancel": "cancelled", "resume": "resumed", "delete": "deleted"}
ALLOWED = {
    "cancel": CANCELLABLE_STATUSES,
    "resume": RESUMABLE_STATUSES,
    "delete": frozenset(STATUSES) - ACTIVE_STATUSES,
}
WHICH = {
    "cancel": "queued or running",
    "resume": "interrupted, failed, cancelled or lost",
    "delete": "finished (not queued, running or cancelling: cancel it first)",
}
EFFECT = {
    "cancel": "It stops at its next step boundary, after a checkpoint.",
    "resume": "It continues from its last checkpoint.",
    "delete": "It disappears from every list; it can be restored from “Recently deleted” "
    "until its files are purged.",
}
PICKED_ROW_JS = read_static("picked_row.js")
FINAL = frozenset({"succeeded", "failed", "cancelled", "interrupted", "lost"})


# -- the table --------------------------------------------------------------------------------


def split_tags(text: Any) -> list[str]:
    """'a, b ,,c' -> ['a', 'b', 'c'] (duplicates dropped, order kept)."""
    return list(dict.fromkeys(t.strip() for t in str(text or "").split(",") if t.strip()))


def filters(
    statuses: list[str] | None, kind: str | None, search: Any = "", tags: Any = ""
) -> dict[str, Any]:
    return {
        "statuses": [s for s in (statuses or []) if s in STATUSES],
        "kind": None if kind in (None, "", "all") else kind,
        "q": str(search or "").strip() or None,
        "tags": split_tags(tags),
    }


def empty_text(wanted: dict[str, Any]) -> str:
    """Why the table is empty, naming the filters (a search for "%" said "No jobs match the
    filter yet", as if it had been a wildcard that matched nothing yet)."""
    parts = []
    if wanted["q"]:
        parts.append(f"a name containing “{wanted['q']}”")
    if wanted["tags"]:
        parts.append("the tags " + ", ".join(f"“{t}”" for t in wanted["tags"]))
    if wanted["statuses"]:
        parts.append("status " + " or ".join(wanted["statuses"]))
    if wanted["kind"]:
        parts.append(f"kind {wanted['kind']}")
    if not parts:
        return "No jobs yet: submit one below."
    return "No job has " + "; ".join(parts) + "."


def table_html(
    client: ApiClient,
    statuses: Any,
    kind: Any,
    job: Any,
    search: Any = "",
    tags: Any = "",
) -> str:
    wanted = filters(statuses, kind, search, tags)
    try:
        page = client.list_jobs(**wanted, limit=PAGE)
    except ApiError as exc:
        return render.notice(f"Could not list the jobs: {exc.message}", "error")
    more = (
        f'<div class="tg-muted">Showing the newest {len(page.jobs)} of {page.count} jobs.</div>'
        if page.count > len(page.jobs)
        else f'<div class="tg-muted">{page.count} job{"s" if page.count != 1 else ""}.</div>'
    )
    table = render.jobs_table(page.jobs, selected=as_int(job), empty=empty_text(wanted))
    return f'<div class="tg-table-wrap">{table}</div>{more}'


def selected_html(job: Job | None) -> str:
    if job is None:
        return '<div class="tg-muted">Click a row to select a job (double-click opens it).</div>'
    waiting = (
        f" · {render.queue_text(job)}" if job.status == "queued" and job.queue_position else ""
    )
    return (
        f'<div data-job-id="{job.id}">Selected: <b>#{job.id}</b> <span class="tg-job-name">'
        f"{render.esc(job.name or '(unnamed)')}</span> {render.status_badge(job.status)}"
        f"{render.esc(waiting)}</div>"
    )


def watched(watch: Any, client: ApiClient) -> tuple[Any, Any]:
    """A notice about a job, re-worded when the job's status or queue position moves on (never
    left stale, such as "now cancelling" after it was cancelled, or "3rd in the queue" after
    two jobs ahead of it started). `watch`: {"job_id", "text", "status", "position"}."""
    if not isinstance(watch, dict) or watch.get("status") in FINAL:
        return gr.skip(), gr.skip()
    try:
        job = client.get_job(int(watch["job_id"]))
    except ApiError:
        return gr.skip(), gr.skip()
    if job.status == watch.get("status") and job.queue_position == watch.get("position"):
        return gr.skip(), gr.skip()
    new = {**watch, "status": job.status, "position": job.queue_position}
    return new, render.watch_notice(new, job)


def tick(
    client: ApiClient,
    statuses: Any,
    kind: Any,
    job: Any,
    search: Any,
    tags: Any,
    watch_action: Any,
    watch_form: Any,
) -> tuple[Any, ...]:
    """The timer: the table, the selected job's line (its status moves too) and the notices
    that speak about a job's status."""
    table = table_html(client, statuses, kind, job, search, tags)
    notices = (*watched(watch_action, client), *watched(watch_form, client))
    job_id = as_int(job)
    if job_id is None:
        return table, gr.skip(), *notices
    try:
        return table, selected_html(client.get_job(job_id)), *notices
    except ApiError:
        return table, gr.skip(), *notices


# -- selection ----------------------------------------------------------------------------------


def select_row(client: ApiClient, data: dict[str, Any], pending: Any) -> tuple[Any, ...]:
    """A row click: (job, selected line, confirm row, action message). A pending confirmation
    about another job is withdrawn; one about this job stays. (A double click then opens the
    Run tab in the page: show_tab_js.)"""
    job_id = as_int(data.get("job_id"))
    same = isinstance(pending, dict) and pending.get("job_id") == job_id
    confirm = gr.skip() if same else gr.update(visible=False)
    message = gr.skip() if same else ""
    if job_id is None:
        return None, selected_html(None), confirm, message
    try:
        job = client.get_job(job_id)
    except ApiError as exc:
        return job_id, render.notice(exc.message, "error"), confirm, message
    return job_id, selected_html(job), confirm, message


def show_selected(client: ApiClient, job: Any) -> str:
    job_id = as_int(job)
    if job_id is None:
        return selected_html(None)
    try:
        return selected_html(client.get_job(job_id))
    except ApiError as exc:
        return render.notice(exc.message, "error")


def gate_actions(client: ApiClient, job: Any, me: dict[str, Any] | None) -> tuple[Any, ...]:
    """Cancel, resume, delete and save, disabled with the reason when the key may not manage
    the selected job (without a key nothing is disabled: the actions say a key is needed)."""
    job_id = as_int(job)
    found = None
    if job_id is not None and me:
        try:
            found = client.get_job(job_id)
        except ApiError:
            found = None
    reason = access.manage_refusal(me, found) if me else None
    allowed = gr.update(interactive=reason is None)
    return allowed, allowed, allowed, allowed, access.refusal_html(reason)


# -- cancel / resume / delete, confirmed in the page ---------------------------------------------


def ask(client: ApiClient, action: str, job: Any, picked: Any) -> tuple[Any, ...]:
    """The confirmation of `action` on the row the page highlights (`picked`, read from the
    page at the click), else on the selection the server knows (`job`). Returns (pending,
    confirm row, its text, message); pending carries the job id the text names, and only
    that id is acted on."""
    hide = gr.update(visible=False)
    job_id = as_int(picked) if as_int(picked) is not None else as_int(job)
    if job_id is None:
        return None, hide, "", render.notice("Select a job in the table first.", "warn")
    if not client.api_key:
        return None, hide, "", render.notice(KEY_REQUIRED_MESSAGE, "warn")
    try:
        current = client.get_job(job_id)
    except ApiError as exc:
        return None, hide, "", render.notice(exc.message, "error")
    if current.status not in ALLOWED[action]:
        text = (
            f"Job #{job_id} {render.status_phrase(current.status)}; only {WHICH[action]} jobs "
            f"can be {PAST[action]}."
        )
        return None, hide, "", render.notice(text, "warn")
    text = (
        f'<div class="tg-notice tg-warn" data-job-id="{job_id}">{action.capitalize()} job '
        f'<b>#{job_id}</b> <span class="tg-job-name">{render.esc(current.name or "(unnamed)")}'
        f"</span>? {EFFECT[action]}</div>"
    )
    return {"action": action, "job_id": job_id}, gr.update(visible=True), text, ""


def ask_cancel(client: ApiClient, job: Any, picked: Any) -> tuple[Any, ...]:
    return ask(client, "cancel", job, picked)


def ask_resume(client: ApiClient, job: Any, picked: Any) -> tuple[Any, ...]:
    return ask(client, "resume", job, picked)


def ask_delete(client: ApiClient, job: Any, picked: Any) -> tuple[Any, ...]:
    return ask(client, "delete", job, picked)


def confirmed(
    client: ApiClient,
    pending: Any,
    statuses: Any,
    kind: Any,
    job: Any,
    search: Any,
    tags: Any,
) -> tuple[Any, ...]:
    """ "Yes, do it": the action on the job the confirmation named. Returns (pending, confirm
    row, its text, message, table, action watch, selected job, recently deleted)."""
    hide = gr.update(visible=False)
    if not isinstance(pending, dict):
        return None, hide, "", "", gr.skip(), gr.skip(), gr.skip(), gr.skip()
    job_id = int(pending["job_id"])
    watch: Any = None
    new_job: Any = gr.skip()
    deleted: Any = gr.skip()
    try:
        if pending["action"] == "delete":
            client.delete_job(job_id)
            note = render.notice(
                f"Job #{job_id} was deleted; “Recently deleted” below can restore it.", "ok"
            )
            new_job = None
            deleted = deleted_html(client)
        else:
            if pending["action"] == "cancel":
                done = client.cancel_job(job_id)
                prefix = "Cancel requested."
            else:
                done = client.resume_job(job_id)
                prefix = "Resumed from its last checkpoint."
            watch = {
                "job_id": done.id,
                "text": prefix,
                "status": done.status,
                "position": done.queue_position,
            }
            note = render.watch_notice(watch, done)
    except ApiError as exc:
        note = render.notice(exc.message, "error")
    table = table_html(client, statuses, kind, None if new_job is None else job, search, tags)
    return None, hide, "", note, table, watch, new_job, deleted


def not_confirmed() -> tuple[Any, ...]:
    return None, gr.update(visible=False), "", render.notice("Nothing was changed.", "info")


# -- recently deleted --------------------------------------------------------------------------


def deleted_html(client: ApiClient) -> str:
    try:
        jobs, count = client.deleted_jobs(limit=20)
    except ApiError as exc:
        return render.notice(f"Could not list the deleted runs: {exc.message}", "error")
    return render.deleted_list(jobs, count)


def restore(
    client: ApiClient,
    data: dict[str, Any],
    statuses: Any,
    kind: Any,
    job: Any,
    search: Any,
    tags: Any,
) -> tuple[Any, Any, Any]:
    """A Restore click: (message, recently deleted, table)."""
    job_id = as_int(data.get("job_id"))
    if job_id is None:
        return gr.skip(), gr.skip(), gr.skip()
    try:
        back = client.restore_job(job_id)
        note = render.notice(
            f"Job #{back.id} {render.esc(back.name or '(unnamed)')} was restored.", "ok"
        )
    except ApiError as exc:
        note = render.notice(exc.message, "warn" if exc.status == 401 else "error")
    return note, deleted_html(client), table_html(client, statuses, kind, job, search, tags)


# -- name, tags, notes ----------------------------------------------------------------------------


def fill_edit(client: ApiClient, job: Any) -> tuple[Any, Any, Any]:
    job_id = as_int(job)
    if job_id is None:
        return "", "", ""
    try:
        found = client.get_job(job_id)
    except ApiError:
        return gr.skip(), gr.skip(), gr.skip()
    return found.name, ", ".join(found.tags), found.notes


def save_edit(
    client: ApiClient,
    job: Any,
    name: Any,
    tags_text: Any,
    notes: Any,
    statuses: Any,
    kind: Any,
    search: Any,
    tags: Any,
) -> tuple[Any, Any]:
    job_id = as_int(job)
    if job_id is None:
        return render.notice("Select a job in the table first.", "warn"), gr.skip()
    try:
        done = client.update_job(
            job_id,
            name=str(name or "").strip() or None,
            tags=split_tags(tags_text),
            notes=str(notes or ""),
        )
    except ApiError as exc:
        return render.notice(exc.message, "warn" if exc.status == 401 else "error"), gr.skip()
    return (
        render.notice(f"Job #{done.id} saved: name, {len(done.tags)} tags, notes.", "ok"),
        table_html(client, statuses, kind, job, search, tags),
    )


# -- layout and wiring ------------------------------------------------------------------------


def _button(label: str, **options: Any) -> gr.Button:
    return gr.Button(label, size="sm", scale=0, min_width=120, **options)


def build(sh: Shared, demo: gr.Blocks, tab: gr.Tab) -> None:
    with gr.Row():
        status_filter = gr.CheckboxGroup(
            list(STATUSES), value=[], label="Status (none ticked: all)", scale=4
        )
        kind_filter = gr.Radio(
            ["all", "train", "sample", "evaluate"], value="all", label="Kind", scale=2
        )
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90)
    with gr.Row():
        search = gr.Textbox(
            label="Search names", placeholder="part of a run's name", scale=3, elem_id="tg-search"
        )
        tag_filter = gr.Textbox(
            label="Tags (all of them; comma-separated)",
            placeholder="baseline, sweep-3",
            scale=2,
            elem_id="tg-tag-filter",
        )
    table = gr.HTML(elem_id="tg-jobs", js_on_load=read_static("runs.js"))
    with gr.Row(equal_height=True):
        selected = gr.HTML(selected_html(None), elem_id="tg-selected-job")
        open_run, open_tree = _button("Open in Run"), _button("Open trees")
        buttons = {
            "cancel": _button("Cancel run…", variant="stop", elem_id="tg-cancel"),
            "resume": _button("Resume run…", elem_id="tg-resume"),
            "delete": _button("Delete run…", variant="stop", elem_id="tg-delete"),
        }
    permission = gr.HTML(elem_id="tg-permission")
    with gr.Accordion("Name, tags and notes of the selected run", open=False, elem_id="tg-manage"):
        with gr.Row():
            edit_name = gr.Textbox(label="name", scale=2, elem_id="tg-edit-name")
            edit_tags = gr.Textbox(label="tags (comma-separated)", scale=2, elem_id="tg-edit-tags")
        edit_notes = gr.Textbox(label="notes", lines=2, elem_id="tg-edit-notes")
        save = gr.Button("Save name, tags and notes", size="sm", elem_id="tg-save")
    with gr.Row(visible=False, elem_id="tg-confirm") as confirm_row:
        confirm_text = gr.HTML()
        yes = _button("Yes, do it", variant="stop", elem_id="tg-confirm-yes")
        no = _button("No, keep it")
    action_msg = gr.HTML(elem_id="tg-action-msg")
    with gr.Accordion("Recently deleted (restorable)", open=False, elem_id="tg-deleted") as bin_:
        deleted = gr.HTML(elem_id="tg-deleted-list", js_on_load=read_static("deleted.js"))
    picked = gr.Number(None, visible=False, elem_id="tg-picked")  # the row the page highlights
    pending = gr.State(None)  # {"action": "cancel" | "resume" | "delete", "job_id": int}
    action_watch = gr.State(None)  # the job the action notice is about (see `watched`)
    timer = gr.Timer(REFRESH_SECONDS)
    form = submit.build(sh, demo)

    key, job = sh.key, sh.job
    view = [status_filter, kind_filter, job, search, tag_filter]
    for source in (refresh.click, status_filter.change, kind_filter.change, search.submit,
                   search.blur, tag_filter.submit, tag_filter.blur, tab.select, demo.load):  # fmt: skip
        source(sh.call(table_html), [key, *view], table, **QUIET)
    timer.tick(
        sh.call(tick),
        [key, *view, action_watch, form.watch],
        [table, selected, action_watch, action_msg, form.watch, form.message],
        **QUIET,
    )
    row_io = ([key, pending], [job, selected, confirm_row, action_msg])
    # No overlay: it would eat a double click. A double click then opens the run.
    table.select(sh.call_event(select_row), *row_io, show_progress="hidden")
    table.double_click(sh.call_event(select_row), *row_io, show_progress="hidden").then(
        None, js=show_tab_js(TAB_RUN)
    )
    # What shows the shared job here follows it while the tab is on screen, and catches up
    # when it comes back (a job picked in another tab; Shared.when_shown).
    sh.when_shown(TAB_RUNS, sh.call(show_selected), [key, job], [selected], follow_job=True)
    edits = [edit_name, edit_tags, edit_notes]
    sh.when_shown(TAB_RUNS, sh.call(fill_edit), [key, job], edits, follow_job=True)
    gated = [*buttons.values(), save, permission]
    sh.when_shown(TAB_RUNS, sh.call(gate_actions), [key, job, sh.me], gated, follow_job=True)
    sh.me.change(sh.call(gate_actions), [key, job, sh.me], gated)
    open_run.click(None, js=show_tab_js(TAB_RUN))
    open_tree.click(None, js=show_tab_js(TAB_TREE))
    confirm = [pending, confirm_row, confirm_text, action_msg]
    asks = {"cancel": ask_cancel, "resume": ask_resume, "delete": ask_delete}
    for action, button in buttons.items():
        button.click(sh.call(asks[action]), [key, job, picked], confirm, js=PICKED_ROW_JS)
    yes.click(
        sh.call(confirmed),
        [key, pending, *view],
        [*confirm, table, action_watch, job, deleted],
    )
    no.click(not_confirmed, None, confirm)
    bin_.expand(sh.call(deleted_html), [key], deleted, **QUIET)
    deleted.select(sh.call_event(restore), [key, *view], [action_msg, deleted, table])
    save.click(
        sh.call(save_edit),
        [key, job, edit_name, edit_tags, edit_notes, status_filter, kind_filter, search,
         tag_filter],
        [action_msg, table],
    )  # fmt: skip
    form.created.then(sh.call(table_html), [key, *view], table, **QUIET)
