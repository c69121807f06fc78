"""The Datasets tab: upload a prompt file, see every dataset version (splits, row counts,
metadata columns, the jobs that use it), preview and search its rows, delete an unused one.

Handlers are module-level functions over the HTTP client (frontend/dataset_calls.py); `build`
only lays the tab out and wires them.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from frontend import render
from frontend.client import ApiError
from frontend.dataset_calls import (
    dataset_rows,
    delete_dataset,
    import_progress,
    list_datasets,
    upload_dataset,
)
from frontend.render import esc
from frontend.shared import TAB_DATASETS, Shared, as_int

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
POLL_SECONDS = 0.5
# (fraction done or None, text): gr.Progress's call, the status line over the tab's outputs.
Report = Callable[[float | None, str], None]


def progress_text(item: dict[str, Any] | None) -> tuple[float | None, str]:
    """The status line of GET /datasets/imports/{id}'s answer (None: no figures from the API)."""
    if item is None:
        return None, "Uploading and importing ..."
    done, total = int(item["done"]), int(item["total"])
    if total <= 0:
        return None, f"{item['phase'].capitalize()} ..."
    return done / total, (
        f"{item['phase'].capitalize()}: {done / 1e6:.1f} of {total / 1e6:.1f} MB "
        f"({100 * done // total}%)"
    )


def follow(client: Any, send: Callable[[str], dict[str, Any]], report: Report) -> dict[str, Any]:
    """`send(progress_id)` (the upload) in a thread; every POLL_SECONDS until it answers, the
    import's progress from the API goes to `report`."""
    progress_id = secrets.token_urlsafe(16)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["answer"] = send(progress_id)
        except BaseException as exc:  # raised in the handler's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="dataset-upload", daemon=True)
    worker.start()
    while True:
        worker.join(POLL_SECONDS)
        if not worker.is_alive():
            break
        report(*progress_text(import_progress(client, progress_id)))
    if "error" in outcome:
        raise outcome["error"]
    answer: dict[str, Any] = outcome["answer"]
    return answer


def table_html(datasets: list[dict[str, Any]]) -> str:
    if not datasets:
        return render.notice("No datasets yet: upload a .txt, .jsonl, .csv or .parquet file.")
    rows = []
    for d in datasets:
        splits = ", ".join(f"{esc(s)} {n:,}" for s, n in sorted(d["splits"].items()))
        used = ", ".join(f"#{j}" for j in d.get("used_by", [])) or "—"
        columns = ", ".join(esc(c) for c in d["columns"]) or "—"
        rows.append(
            f'<tr data-dataset-id="{int(d["id"])}"><td>{int(d["id"])}</td><td>{esc(d["name"])}'
            f"</td><td>{int(d['rows']):,}</td><td>{splits}</td><td>{columns}</td>"
            f"<td><code>{esc(d['sha256'][:12])}</code></td><td>{esc(used)}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("id", "name", "rows", "splits", "metadata columns", "version", "used by")
    )
    return (
        f'<table class="tg-table" id="tg-datasets-table"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def rows_html(page: dict[str, Any]) -> str:
    items = page.get("data", [])
    caption = f"split {esc(page.get('split', ''))}: {int(page.get('count', 0)):,} matching rows"
    body = "".join(
        f"<tr><td>{int(r['row'])}</td><td>{esc(r['prompt'])}</td>"
        f"<td><code>{esc(json.dumps(r['metadata'], ensure_ascii=False)) if r['metadata'] else ''}"
        "</code></td></tr>"
        for r in items
    )
    return (
        f'<div class="tg-muted" id="tg-dataset-count">{caption}</div>'
        f'<table class="tg-table" id="tg-dataset-rows"><thead><tr><th>row</th><th>prompt</th>'
        f"<th>metadata</th></tr></thead><tbody>{body}</tbody></table>"
    )


def choices(datasets: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(f"#{d['id']} {d['name']} ({d['rows']:,} rows)", int(d["id"])) for d in datasets]


def refresh(sh: Shared, key: str | None, request: Any) -> tuple[str, Any]:
    try:
        datasets = list_datasets(sh.ctx.client(request, key))
    except ApiError as error:
        return render.notice(str(error), "error"), gr.update()
    return table_html(datasets), gr.update(choices=choices(datasets))


def upload(
    sh: Shared,
    file: str | None,
    name: str,
    split: str,
    key: str | None,
    request: Any,
    report: Report | None = None,
) -> str:
    name, split = (name or "").strip(), (split or "train").strip() or "train"
    if not file:
        return render.notice("Choose a file to upload.", "error")
    if not NAME.match(name) or name.isdigit():
        return render.notice(
            "Name it with letters, digits, '_', '.' or '-' (not digits only).", "error"
        )
    path = Path(file)
    client = sh.ctx.client(request, key)

    def send(progress_id: str | None) -> dict[str, Any]:
        return upload_dataset(
            client, path, name=name, filename=path.name, split=split, progress_id=progress_id
        )

    try:
        made = send(None) if report is None else follow(client, send, report)
    except ApiError as error:
        return render.notice(f"Not imported: {error}", "error")
    return render.notice(
        f"Imported #{made['id']} {made['name']}: {made['rows']:,} rows, version "
        f"{made['sha256'][:12]}.",
        "ok",
    )


def preview(sh: Shared, dataset: Any, split: str, query: str, key: str | None, request: Any) -> str:
    dataset_id = as_int(dataset)
    if dataset_id is None:
        return render.notice("Pick a dataset.", "error")
    try:
        page = dataset_rows(
            sh.ctx.client(request, key), dataset_id, split=(split or "").strip() or None,
            query=query or "",
        )  # fmt: skip
    except ApiError as error:
        return render.notice(str(error), "error")
    return rows_html(page)


def delete(sh: Shared, dataset: Any, key: str | None, request: Any) -> str:
    dataset_id = as_int(dataset)
    if dataset_id is None:
        return render.notice("Pick a dataset.", "error")
    try:
        delete_dataset(sh.ctx.client(request, key), dataset_id)
    except ApiError as error:
        return render.notice(f"Not deleted: {error}", "error")
    return render.notice(f"Deleted dataset #{dataset_id}.", "ok")


def build(sh: Shared, demo: gr.Blocks, tab: gr.Tab) -> None:
    gr.Markdown(
        "Prompt datasets: a run names one as `prompts: {dataset: NAME, split: train}`; every "
        "column but the prompt reaches the rewards as that prompt's metadata."
    )
    with gr.Row(equal_height=True):
        file = gr.File(label="File (.txt, .jsonl, .csv, .parquet)", type="filepath", scale=3,
                       elem_id="tg-dataset-file")  # fmt: skip
        name = gr.Textbox(label="Name", scale=2, elem_id="tg-dataset-name")
        split = gr.Textbox(label="Split", value="train", scale=1, elem_id="tg-dataset-split")
        go = gr.Button("Upload", variant="primary", scale=0, min_width=120,
                       elem_id="tg-dataset-upload")  # fmt: skip
    status = gr.HTML(elem_id="tg-dataset-status")
    reload = gr.Button("Refresh list", size="sm", elem_id="tg-dataset-refresh")
    listing = gr.HTML(elem_id="tg-datasets")
    with gr.Row(equal_height=True):
        picker = gr.Dropdown([], label="Dataset", scale=3, elem_id="tg-dataset-pick")
        view_split = gr.Textbox(label="Split (blank: train)", scale=1, elem_id="tg-dataset-view")
        query = gr.Textbox(label="Search prompts", scale=2, elem_id="tg-dataset-search")
        show = gr.Button("Preview", scale=0, min_width=100, elem_id="tg-dataset-preview")
        remove = gr.Button("Delete", variant="stop", scale=0, min_width=100,
                           elem_id="tg-dataset-delete")  # fmt: skip
    rows = gr.HTML(elem_id="tg-dataset-rows-box")

    def on_refresh(key: str | None, request: gr.Request) -> tuple[str, Any]:
        return refresh(sh, key, request)

    def on_upload(
        f: Any,
        n: str,
        s: str,
        key: str | None,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's way to ask for it
    ) -> Any:
        def report(fraction: float | None, text: str) -> None:
            progress(fraction, desc=text)

        # the file box is free for the next upload
        return upload(sh, f, n, s, key, request, report), None

    def on_preview(d: Any, s: str, q: str, key: str | None, request: gr.Request) -> str:
        return preview(sh, d, s, q, key, request)

    def on_delete(d: Any, key: str | None, request: gr.Request) -> str:
        return delete(sh, d, key, request)

    sh.when_shown(TAB_DATASETS, on_refresh, [sh.key], [listing, picker])
    reload.click(on_refresh, [sh.key], [listing, picker])
    go.click(on_upload, [file, name, split, sh.key], [status, file]).then(
        on_refresh, [sh.key], [listing, picker]
    )
    show.click(on_preview, [picker, view_split, query, sh.key], rows)
    query.submit(on_preview, [picker, view_split, query, sh.key], rows)
    remove.click(on_delete, [picker, sh.key], status).then(on_refresh, [sh.key], [listing, picker])
