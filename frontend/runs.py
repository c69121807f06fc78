"""The Runs tab: the jobs table (filtered by status and kind, refreshed every few seconds), cancel
and resume with an in-page confirmation, and the submit form built from GET /presets."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import gradio as gr

from frontend import access, form, render
from frontend.client import (
    ACTIVE_STATUSES,
    CANCELLABLE_STATUSES,
    KEY_REQUIRED_MESSAGE,
    RESUMABLE_STATUSES,
    STATUSES,
    ApiError,
    Job,
)
from frontend.shared import QUIET, TAB_RUN, TAB_TREE, Shared, as_int, event_data

REFRESH_SECONDS = 3.0
PAST = {"cancel": "cancelled", "resume": "resumed", "delete": "deleted"}
PAGE = 50
DEFAULT_PRESET = "digits-treegrpo"

# One delegated listener: a click (or Enter) on a row tells Python which job it is.
ROW_CLICK_JS = """
// Opening is its own event: Gradio drops a trigger while the same event is still pending, so a
// second 'select' from a double click would be lost.
const pick = (row, open) => {
  if (!row) return;
  element.querySelectorAll('tr.tg-selected').forEach((r) => r.classList.remove('tg-selected'));
  row.classList.add('tg-selected');
  trigger(open ? 'double_click' : 'select', {job_id: Number(row.dataset.jobId), open: open});
};
element.addEventListener('click', (e) => pick(e.target.closest('tr[data-job-id]'), false));
element.addEventListener('dblclick', (e) => pick(e.target.closest('tr[data-job-id]'), true));
element.addEventListener('keydown', (e) => {
  if (e.key === 'Enter') pick(e.target.closest('tr[data-job-id]'), true);
});
"""


@dataclass
class RunsTab:
    table: gr.HTML


def _filters(
    statuses: list[str] | None, kind: str | None, search: Any = "", tags: Any = ""
) -> dict[str, Any]:
    return {
        "statuses": [s for s in (statuses or []) if s in STATUSES],
        "kind": None if kind in (None, "", "all") else kind,
        "q": str(search or "").strip() or None,
        "tags": split_tags(tags),
    }


def split_tags(text: Any) -> list[str]:
    """'a, b ,,c' -> ['a', 'b', 'c'] (duplicates dropped, order kept)."""
    return list(dict.fromkeys(t.strip() for t in str(text or "").split(",") if t.strip()))


def _table_html(
    sh: Shared,
    request: Any,
    key: str | None,
    statuses: Any,
    kind: Any,
    job: Any,
    search: Any = "",
    tags: Any = "",
) -> str:
    try:
        page = sh.ctx.client(request, key).list_jobs(
            **_filters(statuses, kind, search, tags), limit=PAGE
        )
    except ApiError as exc:
        return render.notice(f"Could not list the jobs: {exc.message}", "error")
    more = (
        f'<div class="tg-muted">Showing the newest {len(page.jobs)} of {page.count} jobs.</div>'
        if page.count > len(page.jobs)
        else f'<div class="tg-muted">{page.count} job{"s" if page.count != 1 else ""}.</div>'
    )
    return (
        '<div class="tg-table-wrap">'
        + render.jobs_table(page.jobs, selected=as_int(job))
        + "</div>"
        + more
    )


def _selected_html(job: Job | None) -> str:
    if job is None:
        return '<div class="tg-muted">Click a row to select a job (double-click opens it).</div>'
    waiting = (
        f" · {render.queue_text(job)}" if job.status == "queued" and job.queue_position else ""
    )
    return (
        f'<div>Selected: <b>#{job.id}</b> <span class="tg-job-name">'
        f"{render.esc(job.name or '(unnamed)')}</span> {render.status_badge(job.status)}"
        f"{render.esc(waiting)}</div>"
    )


def _watched(watch: Any, client: Any) -> tuple[Any, Any]:
    """A notice about a job, re-worded when the job's status moves on (never left stale, such
    as "now cancelling" after it was cancelled). `watch`: {"job_id", "text", "status"}."""
    if not isinstance(watch, dict) or watch.get("status") in FINAL:
        return gr.skip(), gr.skip()
    try:
        job = client.get_job(int(watch["job_id"]))
    except ApiError:
        return gr.skip(), gr.skip()
    if job.status == watch.get("status"):
        return gr.skip(), gr.skip()
    new = {**watch, "status": job.status}
    return new, watch_notice(new, job)


FINAL = frozenset({"succeeded", "failed", "cancelled", "interrupted", "lost"})


def watch_notice(watch: dict[str, Any], job: Job | None = None) -> str:
    status = str(watch.get("status") or "")
    text = f"{watch['text']} Job #{watch['job_id']} {render.status_phrase(status)}"
    if job is not None and status == "queued" and job.queue_position:
        text += f" ({render.queue_text(job)})"
    kind = "error" if status in ("failed", "lost") else "ok"
    return render.notice(text + ".", kind)


def build(sh: Shared, demo: gr.Blocks) -> RunsTab:
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
            label="Search names",
            placeholder="part of a run's name",
            scale=3,
            elem_id="tg-search",
        )
        tag_filter = gr.Textbox(
            label="Tags (all of them; comma-separated)",
            placeholder="baseline, sweep-3",
            scale=2,
            elem_id="tg-tag-filter",
        )
    table = gr.HTML(elem_id="tg-jobs", js_on_load=ROW_CLICK_JS)
    with gr.Row(equal_height=True):
        selected = gr.HTML(_selected_html(None), elem_id="tg-selected-job")
        open_run = gr.Button("Open in Run", size="sm", scale=0, min_width=120)
        open_tree = gr.Button("Open trees", size="sm", scale=0, min_width=120)
        cancel = gr.Button("Cancel run…", size="sm", variant="stop", scale=0, min_width=120)
        resume = gr.Button("Resume run…", size="sm", scale=0, min_width=120)
        delete = gr.Button(
            "Delete run…", size="sm", variant="stop", scale=0, min_width=120, elem_id="tg-delete"
        )
    permission = gr.HTML(elem_id="tg-permission")
    with gr.Accordion("Name, tags and notes of the selected run", open=False, elem_id="tg-manage"):
        with gr.Row():
            edit_name = gr.Textbox(label="name", scale=2, elem_id="tg-edit-name")
            edit_tags = gr.Textbox(label="tags (comma-separated)", scale=2, elem_id="tg-edit-tags")
        edit_notes = gr.Textbox(label="notes", lines=2, elem_id="tg-edit-notes")
        save = gr.Button("Save name, tags and notes", size="sm", elem_id="tg-save")
    with gr.Row(visible=False, elem_id="tg-confirm") as confirm_row:
        confirm_text = gr.HTML()
        confirm_yes = gr.Button("Yes, do it", variant="stop", size="sm", scale=0, min_width=120)
        confirm_no = gr.Button("No, keep it", size="sm", scale=0, min_width=120)
    action_msg = gr.HTML(elem_id="tg-action-msg")
    pending = gr.State(None)  # {"action": "cancel" | "resume" | "delete", "job_id": int}
    action_watch = gr.State(None)  # the job the action notice is about (see _watched)
    form_watch = gr.State(None)  # the job the form's "Created job" notice is about
    timer = gr.Timer(REFRESH_SECONDS)

    gr.Markdown("### Submit a run")
    presets = gr.State({})  # preset name -> full config
    prompt_sets = gr.State([])
    token = gr.State("")  # Idempotency-Key of the form's next submission
    form_msg = gr.HTML(elem_id="tg-form-msg")
    with gr.Row():
        kind = gr.Radio(list(form.KINDS), value="train", label="kind", scale=2)
        preset = gr.Dropdown([], label="preset", scale=2, elem_id="tg-preset")
        with gr.Column(scale=3, min_width=200):
            name = gr.Textbox(label="name", placeholder="default: the preset", elem_id="tg-name")
            name_err = gr.HTML(elem_id="tg-name-error")
        with gr.Column(scale=1, min_width=140, visible=False) as source_col:
            source = gr.Number(
                None,
                label="source job (its checkpoint's policy)",
                precision=0,
                elem_id="tg-source",
            )
            source_err = gr.HTML(elem_id="tg-source-error")
    inputs: list[gr.components.Component] = []
    errors: list[gr.HTML] = []
    columns: list[gr.Column] = []
    per_row = 4
    for start in range(0, len(form.FIELDS), per_row):
        with gr.Row():
            for spec in form.FIELDS[start : start + per_row]:
                with gr.Column(min_width=180) as column:
                    columns.append(column)
                    elem_id = "tg-f-" + spec.name.replace(".", "-").replace("_", "-")
                    widget: gr.components.Component
                    if spec.kind == "choice":
                        widget = gr.Dropdown(
                            list(spec.choices),
                            label=spec.label,
                            info=spec.info or None,
                            allow_custom_value=spec.name == "model",
                            elem_id=elem_id,
                        )
                    elif spec.kind in ("int", "float"):
                        widget = gr.Number(
                            label=spec.label,
                            precision=0 if spec.kind == "int" else None,
                            info=spec.info or None,
                            elem_id=elem_id,
                        )
                    else:
                        widget = gr.Textbox(
                            label=spec.label,
                            info=spec.info or None,
                            lines=2 if spec.kind == "prompts" else 1,
                            max_lines=8,
                            elem_id=elem_id,
                        )
                    inputs.append(widget)
                    errors.append(gr.HTML(elem_classes=["tg-err-slot"], elem_id=f"{elem_id}-error"))
    advanced = gr.Textbox(
        label="more overrides (one `dotted.name = value` per line)",
        lines=2,
        placeholder="train.kl_beta = 0.01\ntree.backup = logprob_softmax",
        elem_id="tg-advanced",
    )
    advanced_err = gr.HTML(elem_id="tg-advanced-error")
    submit = gr.Button("Submit run", variant="primary", elem_id="tg-submit")
    submit_refusal = gr.HTML(elem_id="tg-submit-refusal")

    # -- table -------------------------------------------------------------------------------

    def refresh_table(
        key: str | None,
        statuses: Any,
        kind_value: Any,
        job: Any,
        text: Any,
        tags: Any,
        request: gr.Request,
    ) -> str:
        return _table_html(sh, request, key, statuses, kind_value, job, text, tags)

    table_inputs = [sh.key, status_filter, kind_filter, sh.job, search, tag_filter]
    for trigger in (
        refresh.click,
        status_filter.change,
        kind_filter.change,
        search.submit,
        search.blur,
        tag_filter.submit,
        tag_filter.blur,
    ):
        trigger(refresh_table, table_inputs, table)

    def refresh_both(
        key: str | None,
        statuses: Any,
        kind_value: Any,
        job: Any,
        text: Any,
        tags: Any,
        watch_a: Any,
        watch_f: Any,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        """The table, the selected job's line (its status moves too) and the notices that
        speak about a job's status."""
        table_html = _table_html(sh, request, key, statuses, kind_value, job, text, tags)
        client = sh.ctx.client(request, key)
        notices = (*_watched(watch_a, client), *_watched(watch_f, client))
        job_id = as_int(job)
        if job_id is None:
            return table_html, gr.skip(), *notices
        try:
            return table_html, _selected_html(client.get_job(job_id)), *notices
        except ApiError:
            return table_html, gr.skip(), *notices

    timer.tick(
        refresh_both,
        [*table_inputs, action_watch, form_watch],
        [table, selected, action_watch, action_msg, form_watch, form_msg],
        **QUIET,
    )
    # At once on page load, not only at the first tick (the table stayed blank for 3 s).
    demo.load(refresh_table, table_inputs, table, **QUIET)

    def select_row(key: str | None, request: gr.Request, evt: gr.EventData) -> tuple[Any, ...]:
        data = event_data(evt)
        job_id = as_int(data.get("job_id"))
        # A double click (or Enter) also opens the job in the Run tab.
        switch = gr.Tabs(selected=TAB_RUN) if data.get("open") else gr.skip()
        job = None
        if job_id is not None:
            try:
                job = sh.ctx.client(request, key).get_job(job_id)
            except ApiError as exc:
                return (
                    job_id,
                    gr.skip(),
                    render.notice(exc.message, "error"),
                    gr.update(visible=False),
                    "",
                    gr.skip(),
                )
        # The page has highlighted the row already; re-drawing the table here would swap the
        # rows under a double click. The next refresh draws the selection from the server.
        return job_id, gr.skip(), _selected_html(job), gr.update(visible=False), "", switch

    # No progress overlay: it would cover the table and take the second click of a double click.
    for event in (table.select, table.double_click):
        event(
            select_row,
            [sh.key],
            [sh.job, table, selected, confirm_row, action_msg, sh.tabs],
            show_progress="hidden",
        )

    def show_selected(job: Any, key: str | None, request: gr.Request) -> str:
        job_id = as_int(job)
        if job_id is None:
            return _selected_html(None)
        try:
            return _selected_html(sh.ctx.client(request, key).get_job(job_id))
        except ApiError as exc:
            return render.notice(exc.message, "error")

    sh.job.change(show_selected, [sh.job, sh.key], selected)

    # -- what this key may do (GET /me): the rest is disabled, with the reason ------------------

    def gate_actions(
        job: Any, me: dict[str, Any] | None, key: str | None, request: gr.Request
    ) -> tuple[Any, ...]:
        job_id = as_int(job)
        found = None
        if job_id is not None and me:
            try:
                found = sh.ctx.client(request, key).get_job(job_id)
            except ApiError:
                found = None
        # Without a key nothing is disabled: the actions themselves say that a key is needed.
        reason = access.manage_refusal(me, found) if me else None
        allowed = gr.update(interactive=reason is None)
        return allowed, allowed, allowed, allowed, access.refusal_html(reason)

    gate_outputs = [cancel, resume, delete, save, permission]
    sh.job.change(gate_actions, [sh.job, sh.me, sh.key], gate_outputs)
    sh.me.change(gate_actions, [sh.job, sh.me, sh.key], gate_outputs)
    open_run.click(lambda: gr.Tabs(selected=TAB_RUN), None, sh.tabs)
    open_tree.click(lambda: gr.Tabs(selected=TAB_TREE), None, sh.tabs)

    # -- cancel / resume, confirmed in the page (no browser dialog) ----------------------------

    def ask(action: str) -> Any:
        allowed = {
            "cancel": CANCELLABLE_STATUSES,
            "resume": RESUMABLE_STATUSES,
            "delete": frozenset(STATUSES) - ACTIVE_STATUSES,
        }[action]

        def handler(job: Any, key: str | None, request: gr.Request) -> tuple[Any, ...]:
            hide = gr.update(visible=False)
            job_id = as_int(job)
            if job_id is None:
                return None, hide, "", render.notice("Select a job in the table first.", "warn")
            if not (key or "").strip():
                return None, hide, "", render.notice(KEY_REQUIRED_MESSAGE, "warn")
            try:
                current = sh.ctx.client(request, key).get_job(job_id)
            except ApiError as exc:
                return None, hide, "", render.notice(exc.message, "error")
            if current.status not in allowed:
                what = {
                    "cancel": "queued or running",
                    "resume": "interrupted, failed, cancelled or lost",
                    "delete": "finished (not queued, running or cancelling: cancel it first)",
                }[action]
                return (
                    None,
                    hide,
                    "",
                    render.notice(
                        f"Job #{job_id} {render.status_phrase(current.status)}; only {what} jobs can be "
                        f"{PAST[action]}.",
                        "warn",
                    ),
                )
            verb = action.capitalize()
            effect = {
                "cancel": "It stops at its next step boundary, after a checkpoint.",
                "resume": "It continues from its last checkpoint.",
                "delete": "It disappears from every list; its images, trees and checkpoints "
                "are removed. This cannot be undone.",
            }[action]
            text = (
                f'<div class="tg-notice tg-warn">{verb} job <b>#{job_id}</b> '
                f'<span class="tg-job-name">{render.esc(current.name or "(unnamed)")}</span>? '
                f"{effect}</div>"
            )
            return {"action": action, "job_id": job_id}, gr.update(visible=True), text, ""

        return handler

    confirm_outputs = [pending, confirm_row, confirm_text, action_msg]
    cancel.click(ask("cancel"), [sh.job, sh.key], confirm_outputs)
    resume.click(ask("resume"), [sh.job, sh.key], confirm_outputs)
    delete.click(ask("delete"), [sh.job, sh.key], confirm_outputs)

    def confirmed(
        action: Any,
        key: str | None,
        statuses: Any,
        kind_value: Any,
        job: Any,
        text: Any,
        tags: Any,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        hide = gr.update(visible=False)
        if not isinstance(action, dict):
            return None, hide, "", "", gr.skip(), gr.skip(), gr.skip()
        client = sh.ctx.client(request, key)
        job_id = int(action["job_id"])
        watch: Any = None
        new_job: Any = gr.skip()
        try:
            if action["action"] == "delete":
                client.delete_job(job_id)
                note = render.notice(f"Job #{job_id} was deleted.", "ok")
                new_job = None
            else:
                if action["action"] == "cancel":
                    done = client.cancel_job(job_id)
                    prefix = "Cancel requested."
                else:
                    done = client.resume_job(job_id)
                    prefix = "Resumed from its last checkpoint."
                watch = {"job_id": done.id, "text": prefix, "status": done.status}
                note = watch_notice(watch, done)
        except ApiError as exc:
            note = render.notice(exc.message, "error")
        return (
            None,
            hide,
            "",
            note,
            _table_html(sh, request, key, statuses, kind_value, job, text, tags),
            watch,
            new_job,
        )

    confirm_yes.click(
        confirmed,
        [pending, sh.key, status_filter, kind_filter, sh.job, search, tag_filter],
        [pending, confirm_row, confirm_text, action_msg, table, action_watch, sh.job],
    )

    # -- name, tags, notes ----------------------------------------------------------------------

    def fill_edit(job: Any, key: str | None, request: gr.Request) -> tuple[Any, Any, Any]:
        job_id = as_int(job)
        if job_id is None:
            return "", "", ""
        try:
            found = sh.ctx.client(request, key).get_job(job_id)
        except ApiError:
            return gr.skip(), gr.skip(), gr.skip()
        return found.name, ", ".join(found.tags), found.notes

    sh.job.change(fill_edit, [sh.job, sh.key], [edit_name, edit_tags, edit_notes])

    def save_edit(
        job: Any,
        key: str | None,
        name_value: Any,
        tags_value: Any,
        notes_value: Any,
        statuses: Any,
        kind_value: Any,
        text: Any,
        tags: Any,
        request: gr.Request,
    ) -> tuple[Any, Any]:
        job_id = as_int(job)
        if job_id is None:
            return render.notice("Select a job in the table first.", "warn"), gr.skip()
        client = sh.ctx.client(request, key)
        try:
            done = client.update_job(
                job_id,
                name=str(name_value or "").strip() or None,
                tags=split_tags(tags_value),
                notes=str(notes_value or ""),
            )
        except ApiError as exc:
            return render.notice(exc.message, "warn" if exc.status == 401 else "error"), gr.skip()
        return (
            render.notice(f"Job #{done.id} saved: name, {len(done.tags)} tags, notes.", "ok"),
            _table_html(sh, request, key, statuses, kind_value, job, text, tags),
        )

    save.click(
        save_edit,
        [
            sh.job,
            sh.key,
            edit_name,
            edit_tags,
            edit_notes,
            status_filter,
            kind_filter,
            search,
            tag_filter,
        ],
        [action_msg, table],
    )
    confirm_no.click(
        lambda: (None, gr.update(visible=False), "", render.notice("Nothing was changed.", "info")),
        None,
        [pending, confirm_row, confirm_text, action_msg],
    )

    # -- the form ------------------------------------------------------------------------------

    def fields_for(algorithm: Any, known: Any) -> list[Any]:
        """Tree fields only for TreeGRPO, the flat group size only for the flat baselines."""
        served = form.served_algorithms((known or {}).values())
        shown = form.fields_for(str(algorithm or ""), served)
        return [gr.Column(visible=spec.name in shown) for spec in form.FIELDS]

    def load_presets(key: str | None, request: gr.Request) -> tuple[Any, ...]:
        client = sh.ctx.client(request, key)
        try:
            found = client.presets()
        except ApiError as exc:
            return (
                {},
                [],
                gr.update(choices=[]),
                render.notice(f"Could not load the presets: {exc.message}", "error"),
                *([gr.skip()] * len(inputs)),
                *([gr.skip()] * len(columns)),
            )
        try:
            sets = sorted(client.prompt_sets())
        except ApiError:
            sets = []
        try:
            models = client.models()
        except ApiError:
            models = []
        by_name = {p.name: p.config for p in found}
        first = DEFAULT_PRESET if DEFAULT_PRESET in by_name else (found[0].name if found else None)
        values = form.preset_values(by_name.get(first, {})) if first else {}
        updates = []
        for spec in form.FIELDS:
            if spec.name == "algorithm":
                choices = list(form.served_algorithms(by_name.values()))
                updates.append(gr.update(choices=choices, value=values.get(spec.name)))
            elif spec.name == "model":
                preset_models = [str(c.get("model")) for c in by_name.values() if c.get("model")]
                choices = list(dict.fromkeys([*models, *preset_models]))
                updates.append(gr.update(choices=choices, value=values.get(spec.name)))
            else:
                updates.append(gr.update(value=values.get(spec.name)))
        return (
            by_name,
            sets,
            gr.update(choices=list(by_name), value=first),
            "",
            *updates,
            *fields_for(values.get("algorithm"), by_name),
        )

    demo.load(
        load_presets,
        [sh.key],
        [presets, prompt_sets, preset, form_msg, *inputs, *columns],
    )
    demo.load(lambda: uuid.uuid4().hex, None, token)

    def fill_from_preset(name_value: Any, known: Any) -> tuple[Any, ...]:
        config = (known or {}).get(name_value) or {}
        values = form.preset_values(config)
        return (
            *(gr.update(value=values.get(spec.name)) for spec in form.FIELDS),
            *[""] * len(errors),
            *fields_for(values.get("algorithm"), known),
        )

    kind.change(lambda value: gr.Column(visible=value != "train"), kind, source_col)

    algorithm_widget = inputs[form.FIELD_NAMES.index("algorithm")]
    assert isinstance(algorithm_widget, gr.Dropdown)

    algorithm_widget.input(fields_for, [algorithm_widget, presets], columns, **QUIET)
    preset.select(fill_from_preset, [preset, presets], [*inputs, *errors, *columns])

    form_inputs: set[gr.blocks.Block] = {
        kind,
        preset,
        name,
        source,
        advanced,
        sh.key,
        token,
        presets,
        prompt_sets,
        *inputs,
    }

    def do_submit(data: dict[Any, Any], request: gr.Request) -> tuple[Any, ...]:
        kind_value, preset_value = data[kind], data[preset]
        name_value, source_value, advanced_value = data[name], data[source], data[advanced]
        key, token_value, known, sets = data[sh.key], data[token], data[presets], data[prompt_sets]
        raw = {spec.name: data[widget] for spec, widget in zip(form.FIELDS, inputs, strict=True)}
        preset_config = (known or {}).get(preset_value) or {}
        result = form.build_request(
            raw,
            preset_config,
            name=(name_value or "").strip(),
            advanced=advanced_value or "",
            prompt_sets=sets or [],
            choices={"algorithm": form.served_algorithms((known or {}).values())},
        )
        slots: dict[str, str] = dict(result.errors)
        params: dict[str, Any] = {}
        if kind_value in ("sample", "evaluate"):
            source_id = as_int(source_value)
            if source_value not in (None, "") and (source_id is None or source_id < 1):
                slots[form.SOURCE_SLOT] = "a job id (1 or more)"
            elif source_id is not None:
                params["source_job_id"] = source_id
        message = ""
        new_watch: Any = gr.skip()
        new_job: Any = gr.skip()
        new_token: Any = gr.skip()
        if slots:
            message = render.notice("Fix the highlighted fields; nothing was sent.", "error")
        else:
            client = sh.ctx.client(request, key)
            try:
                job = client.create_job(
                    kind=kind_value or "train",
                    name=(name_value or "").strip() or None,
                    preset=preset_value or None,
                    config=result.config,
                    params=params,
                    idempotency_key=token_value or None,
                )
            except ApiError as exc:
                advanced_names = form.advanced_names(advanced_value or "")
                unplaced = []
                for field_name, msg in exc.field_errors.items():
                    slot = form.slot_for(field_name, advanced_names)
                    if slot is None:
                        unplaced.append(f"{field_name}: {msg}")
                    else:
                        slots[slot] = f"{slots[slot]}; {msg}" if slot in slots else msg
                if exc.field_errors:
                    text = "The API refused these values; see the messages under the fields."
                    if unplaced:
                        text += " " + "; ".join(unplaced)
                    message = render.notice(text, "error")
                else:
                    message = render.notice(exc.message, "warn" if exc.status == 401 else "error")
            else:
                sent = ", ".join(f"{k}={v}" for k, v in result.config.items()) or "none"
                watch = {
                    "job_id": job.id,
                    "text": f"Created job #{job.id} from preset {preset_value or 'defaults'}; "
                    f"overrides: {sent}.",
                    "status": job.status,
                }
                message = watch_notice(watch, job)
                new_watch = watch
                new_job = job.id
                new_token = uuid.uuid4().hex
        return (
            message,
            render.field_error(slots.get(form.NAME_SLOT)),
            render.field_error(slots.get(form.SOURCE_SLOT)),
            render.field_error(slots.get(form.ADVANCED_SLOT)),
            *(render.field_error(slots.get(spec.name)) for spec in form.FIELDS),
            new_job,
            new_token,
            new_watch,
        )

    def gate_submit(me: dict[str, Any] | None) -> tuple[Any, str]:
        reason = access.submit_refusal(me) if me else None
        return gr.update(interactive=reason is None), access.refusal_html(reason)

    sh.me.change(gate_submit, sh.me, [submit, submit_refusal])

    submit.click(
        do_submit,
        form_inputs,
        [form_msg, name_err, source_err, advanced_err, *errors, sh.job, token, form_watch],
        concurrency_limit=1,
    ).then(refresh_table, table_inputs, table, **QUIET)

    return RunsTab(table=table)
