"""The Runs tab's submit form: kind, preset, name and the preset's main settings as fields (shown
per algorithm), free `dotted.name = value` overrides, each error under its field, and a notice
that follows the new job's status and queue position.

The field rules and the request are frontend/form.py's (pure); the handlers here are plain
functions of an ApiClient and the form's values (tests/frontend/test_ui_runs.py).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import gradio as gr

from frontend import access, form, render
from frontend.client import ApiClient, ApiError
from frontend.shared import QUIET, Shared, as_int
from frontend.static import read_static

DEFAULT_PRESET = "digits-treegrpo"
PER_ROW = 4


@dataclass
class SubmitForm:
    """What the Runs tab wires to: the notice, the job it follows, the submit event."""

    message: gr.HTML
    watch: gr.State  # {"job_id", "text", "status", "position"} of the last created job
    created: Any  # the submit click's event (chain a table refresh with .then)


def column_id(spec: form.FormField) -> str:
    return "tg-fcol-" + spec.name.replace(".", "-").replace("_", "-")


def hidden_columns(algorithm: Any, known: Any) -> str:
    """Tree fields only for TreeGRPO, the flat group size only for the flat baselines: the
    JSON list of the field columns to hide (frontend/static/form_fields.js hides them)."""
    served = form.served_algorithms((known or {}).values())
    shown = form.fields_for(str(algorithm or ""), served)
    return json.dumps([column_id(spec) for spec in form.FIELDS if spec.name not in shown])


def load_presets(client: ApiClient) -> tuple[Any, ...]:
    """(presets, prompt sets, preset picker, message, *field values, hidden columns)."""
    try:
        found = client.presets()
    except ApiError as exc:
        return (
            {},
            [],
            gr.update(choices=[]),
            render.notice(f"Could not load the presets: {exc.message}", "error"),
            *([gr.skip()] * (len(form.FIELDS) + 1)),
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
        hidden_columns(values.get("algorithm"), by_name),
    )


def presets_when_missing(client: ApiClient, known: Any) -> tuple[Any, ...]:
    """A key was pasted: load the presets if the page's first try had none (a studio whose
    reads need a key refused it), and leave a filled form as it is."""
    if known:
        return tuple(gr.skip() for _ in range(4 + len(form.FIELDS) + 1))
    return load_presets(client)


def fill_from_preset(name: Any, known: Any) -> tuple[Any, ...]:
    values = form.preset_values((known or {}).get(name) or {})
    return (
        *(gr.update(value=values.get(spec.name)) for spec in form.FIELDS),
        *[""] * len(form.FIELDS),
        hidden_columns(values.get("algorithm"), known),
    )


def do_submit(
    client: ApiClient,
    kind: Any,
    preset: Any,
    name: Any,
    source: Any,
    advanced: Any,
    token: Any,
    known: Any,
    sets: Any,
    *values: Any,
) -> tuple[Any, ...]:
    """Check the form, then POST /jobs (with the form's Idempotency-Key). Returns (message,
    name / source / advanced errors, *field errors, new job, next token, watch)."""
    raw = dict(zip(form.FIELD_NAMES, values, strict=True))
    result = form.build_request(
        raw,
        (known or {}).get(preset) or {},
        name=str(name or "").strip(),
        advanced=str(advanced or ""),
        prompt_sets=sets or [],
        choices={"algorithm": form.served_algorithms((known or {}).values())},
    )
    slots: dict[str, str] = dict(result.errors)
    params: dict[str, Any] = {}
    if kind in ("sample", "evaluate"):
        source_id = as_int(source)
        if source not in (None, "") and (source_id is None or source_id < 1):
            slots[form.SOURCE_SLOT] = "a job id (1 or more)"
        elif source_id is not None:
            params["source_job_id"] = source_id
    skip = gr.skip()
    new_job, new_token, new_watch = skip, skip, skip
    if slots:
        message = render.notice("Fix the highlighted fields; nothing was sent.", "error")
    else:
        try:
            job = client.create_job(
                kind=kind or "train",
                name=str(name or "").strip() or None,
                preset=preset or None,
                config=result.config,
                params=params,
                idempotency_key=token or None,
            )
        except ApiError as exc:
            message = refusal(exc, slots, form.advanced_names(str(advanced or "")))
        else:
            sent = ", ".join(f"{k}={v}" for k, v in result.config.items()) or "none"
            new_watch = {
                "job_id": job.id,
                "text": f"Created job #{job.id} from preset {preset or 'defaults'}; "
                f"overrides: {sent}.",
                "status": job.status,
                "position": job.queue_position,
            }
            message = render.watch_notice(new_watch, job)
            new_job, new_token = job.id, uuid.uuid4().hex
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


def refusal(exc: ApiError, slots: dict[str, str], advanced_names: list[str]) -> str:
    """The API's refusal: its per-field messages go to their fields' slots (in place), the
    rest into the returned notice."""
    unplaced = []
    for field_name, msg in exc.field_errors.items():
        slot = form.slot_for(field_name, advanced_names)
        if slot is None:
            unplaced.append(f"{field_name}: {msg}")
        else:
            slots[slot] = f"{slots[slot]}; {msg}" if slot in slots else msg
    if not exc.field_errors:
        return render.notice(exc.message, "warn" if exc.status == 401 else "error")
    text = "The API refused these values; see the messages under the fields."
    if unplaced:
        text += " " + "; ".join(unplaced)
    return render.notice(text, "error")


def gate_submit(me: dict[str, Any] | None) -> tuple[Any, str]:
    reason = access.submit_refusal(me) if me else None
    return gr.update(interactive=reason is None), access.refusal_html(reason)


def _widget(spec: form.FormField) -> gr.components.Component:
    elem_id = "tg-f-" + spec.name.replace(".", "-").replace("_", "-")
    info = spec.info or None
    if spec.kind == "choice":
        return gr.Dropdown(
            list(spec.choices),
            label=spec.label,
            info=info,
            allow_custom_value=spec.name == "model",
            elem_id=elem_id,
        )
    if spec.kind in ("int", "float"):
        precision = 0 if spec.kind == "int" else None
        return gr.Number(label=spec.label, precision=precision, info=info, elem_id=elem_id)
    lines = 2 if spec.kind == "prompts" else 1
    return gr.Textbox(label=spec.label, info=info, lines=lines, max_lines=8, elem_id=elem_id)


def build(sh: Shared, demo: gr.Blocks) -> SubmitForm:
    gr.Markdown("### Submit a run")
    presets = gr.State({})  # preset name -> full config
    prompt_sets = gr.State([])
    token = gr.State("")  # Idempotency-Key of the form's next submission
    watch = gr.State(None)
    message = gr.HTML(elem_id="tg-form-msg")
    with gr.Row():
        kind = gr.Radio(list(form.KINDS), value="train", label="kind", scale=2)
        preset = gr.Dropdown([], label="preset", scale=2, elem_id="tg-preset")
        with gr.Column(scale=3, min_width=200):
            name = gr.Textbox(label="name", placeholder="default: the preset", elem_id="tg-name")
            name_err = gr.HTML(elem_id="tg-name-error")
        with gr.Column(scale=1, min_width=140, visible=False) as source_col:
            label = "source job (its checkpoint's policy)"
            source = gr.Number(None, label=label, precision=0, elem_id="tg-source")
            source_err = gr.HTML(elem_id="tg-source-error")
    inputs, errors = [], []
    hidden = gr.Textbox("[]", visible=False, elem_id="tg-f-hidden")  # field columns to hide
    for start in range(0, len(form.FIELDS), PER_ROW):
        with gr.Row():
            for spec in form.FIELDS[start : start + PER_ROW]:
                with gr.Column(min_width=180, elem_id=column_id(spec)):
                    inputs.append(_widget(spec))
                    slot = f"{inputs[-1].elem_id}-error"
                    errors.append(gr.HTML(elem_classes=["tg-err-slot"], elem_id=slot))
    advanced = gr.Textbox(
        label="more overrides (one `dotted.name = value` per line)",
        lines=2,
        placeholder="train.kl_beta = 0.01\ntree.backup = logprob_softmax",
        elem_id="tg-advanced",
    )
    advanced_err = gr.HTML(elem_id="tg-advanced-error")
    button = gr.Button("Submit run", variant="primary", elem_id="tg-submit")
    button_refusal = gr.HTML(elem_id="tg-submit-refusal")

    loaded = [presets, prompt_sets, preset, message, *inputs, hidden]
    demo.load(sh.call(load_presets), [sh.key], loaded)
    sh.key.change(sh.call(presets_when_missing), [sh.key, presets], loaded, **QUIET)
    hidden.change(None, hidden, None, js=read_static("form_fields.js"))
    demo.load(lambda: uuid.uuid4().hex, None, token)
    kind.change(lambda value: gr.Column(visible=value != "train"), kind, source_col)
    algorithm = inputs[form.FIELD_NAMES.index("algorithm")]
    algorithm.input(hidden_columns, [algorithm, presets], hidden, **QUIET)  # type: ignore[attr-defined]
    preset.select(fill_from_preset, [preset, presets], [*inputs, *errors, hidden])
    sh.me.change(gate_submit, sh.me, [button, button_refusal])
    created = button.click(
        sh.call(do_submit),
        [sh.key, kind, preset, name, source, advanced, token, presets, prompt_sets, *inputs],
        [message, name_err, source_err, advanced_err, *errors, sh.job, token, watch],
        concurrency_limit=1,
    )
    return SubmitForm(message=message, watch=watch, created=created)
