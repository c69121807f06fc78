"""The Runs tab: the jobs table (filtered by status and kind, refreshed every few seconds), cancel
and resume with an in-page confirmation, and the submit form built from GET /presets."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import gradio as gr

from frontend import form, render
from frontend.client import (
    CANCELLABLE_STATUSES,
    KEY_REQUIRED_MESSAGE,
    RESUMABLE_STATUSES,
    STATUSES,
    ApiError,
    Job,
)
from frontend.shared import QUIET, TAB_RUN, TAB_TREE, Shared, as_int, event_data

REFRESH_SECONDS = 3.0
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


def _filters(statuses: list[str] | None, kind: str | None) -> dict[str, Any]:
    return {
        "statuses": [s for s in (statuses or []) if s in STATUSES],
        "kind": None if kind in (None, "", "all") else kind,
    }


def _table_html(
    sh: Shared, request: Any, key: str | None, statuses: Any, kind: Any, job: Any
) -> str:
    try:
        page = sh.ctx.client(request, key).list_jobs(**_filters(statuses, kind), limit=PAGE)
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
    return (
        f'<div>Selected: <b>#{job.id}</b> <span class="tg-job-name">'
        f"{render.esc(job.name or '(unnamed)')}</span> {render.status_badge(job.status)}</div>"
    )


def build(sh: Shared, demo: gr.Blocks) -> RunsTab:
    with gr.Row():
        status_filter = gr.CheckboxGroup(
            list(STATUSES), value=[], label="Status (none ticked: all)", scale=4
        )
        kind_filter = gr.Radio(
            ["all", "train", "sample", "evaluate"], value="all", label="Kind", scale=2
        )
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=90)
    table = gr.HTML(elem_id="tg-jobs", js_on_load=ROW_CLICK_JS)
    with gr.Row(equal_height=True):
        selected = gr.HTML(_selected_html(None), elem_id="tg-selected-job")
        open_run = gr.Button("Open in Run", size="sm", scale=0, min_width=120)
        open_tree = gr.Button("Open trees", size="sm", scale=0, min_width=120)
        cancel = gr.Button("Cancel run…", size="sm", variant="stop", scale=0, min_width=120)
        resume = gr.Button("Resume run…", size="sm", scale=0, min_width=120)
    with gr.Row(visible=False, elem_id="tg-confirm") as confirm_row:
        confirm_text = gr.HTML()
        confirm_yes = gr.Button("Yes, do it", variant="stop", size="sm", scale=0, min_width=120)
        confirm_no = gr.Button("No, keep it", size="sm", scale=0, min_width=120)
    action_msg = gr.HTML(elem_id="tg-action-msg")
    pending = gr.State(None)  # {"action": "cancel" | "resume", "job_id": int}
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
    per_row = 4
    for start in range(0, len(form.FIELDS), per_row):
        with gr.Row():
            for spec in form.FIELDS[start : start + per_row]:
                with gr.Column(min_width=180):
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

    # -- table -------------------------------------------------------------------------------

    def refresh_table(
        key: str | None, statuses: Any, kind_value: Any, job: Any, request: gr.Request
    ) -> str:
        return _table_html(sh, request, key, statuses, kind_value, job)

    table_inputs = [sh.key, status_filter, kind_filter, sh.job]
    for trigger in (refresh.click, status_filter.change, kind_filter.change):
        trigger(refresh_table, table_inputs, table)

    def refresh_both(
        key: str | None, statuses: Any, kind_value: Any, job: Any, request: gr.Request
    ) -> tuple[str, Any]:
        """The table and the selected job's line (its status moves too)."""
        table_html = _table_html(sh, request, key, statuses, kind_value, job)
        job_id = as_int(job)
        if job_id is None:
            return table_html, gr.skip()
        try:
            return table_html, _selected_html(sh.ctx.client(request, key).get_job(job_id))
        except ApiError:
            return table_html, gr.skip()

    timer.tick(refresh_both, table_inputs, [table, selected], **QUIET)
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
    open_run.click(lambda: gr.Tabs(selected=TAB_RUN), None, sh.tabs)
    open_tree.click(lambda: gr.Tabs(selected=TAB_TREE), None, sh.tabs)

    # -- cancel / resume, confirmed in the page (no browser dialog) ----------------------------

    def ask(action: str) -> Any:
        allowed = CANCELLABLE_STATUSES if action == "cancel" else RESUMABLE_STATUSES

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
                what = (
                    "queued or running"
                    if action == "cancel"
                    else "interrupted, failed, cancelled or lost"
                )
                return (
                    None,
                    hide,
                    "",
                    render.notice(
                        f"Job #{job_id} {render.status_phrase(current.status)}; only {what} jobs can be "
                        f"{'cancelled' if action == 'cancel' else 'resumed'}.",
                        "warn",
                    ),
                )
            verb = "Cancel" if action == "cancel" else "Resume"
            effect = (
                "It stops at its next step boundary, after a checkpoint."
                if action == "cancel"
                else "It continues from its last checkpoint."
            )
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

    def confirmed(
        action: Any,
        key: str | None,
        statuses: Any,
        kind_value: Any,
        job: Any,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        hide = gr.update(visible=False)
        if not isinstance(action, dict):
            return None, hide, "", "", gr.skip()
        client = sh.ctx.client(request, key)
        job_id = int(action["job_id"])
        try:
            if action["action"] == "cancel":
                done = client.cancel_job(job_id)
                message = f"Job #{done.id} is now {done.status}."
            else:
                done = client.resume_job(job_id)
                message = f"Job #{done.id} is {done.status} again; a worker will pick it up."
            note = render.notice(message, "ok")
        except ApiError as exc:
            note = render.notice(exc.message, "error")
        return (
            None,
            hide,
            "",
            note,
            _table_html(sh, request, key, statuses, kind_value, job),
        )

    confirm_yes.click(
        confirmed,
        [pending, sh.key, status_filter, kind_filter, sh.job],
        [pending, confirm_row, confirm_text, action_msg, table],
    )
    confirm_no.click(
        lambda: (None, gr.update(visible=False), "", render.notice("Nothing was changed.", "info")),
        None,
        [pending, confirm_row, confirm_text, action_msg],
    )

    # -- the form ------------------------------------------------------------------------------

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
            if spec.name == "model":
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
        )

    demo.load(
        load_presets,
        [sh.key],
        [presets, prompt_sets, preset, form_msg, *inputs],
    )
    demo.load(lambda: uuid.uuid4().hex, None, token)

    def fill_from_preset(name_value: Any, known: Any) -> tuple[Any, ...]:
        config = (known or {}).get(name_value) or {}
        values = form.preset_values(config)
        return (
            *(gr.update(value=values.get(spec.name)) for spec in form.FIELDS),
            *[""] * len(errors),
        )

    kind.change(lambda value: gr.Column(visible=value != "train"), kind, source_col)
    preset.select(fill_from_preset, [preset, presets], [*inputs, *errors])

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
                message = render.notice(
                    f"Created job #{job.id} ({job.status}) from preset "
                    f"{preset_value or 'defaults'}; overrides: {sent}.",
                    "ok",
                )
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
        )

    submit.click(
        do_submit,
        form_inputs,
        [form_msg, name_err, source_err, advanced_err, *errors, sh.job, token],
        concurrency_limit=1,
    ).then(refresh_table, table_inputs, table, **QUIET)

    return RunsTab(table=table)
