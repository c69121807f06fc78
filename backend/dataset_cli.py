"""`treegrpo dataset import|list|show`: prompt datasets through a running API (REST client).

    treegrpo dataset import prompts.jsonl --name hpdv2          # upload (streamed), one split
    treegrpo dataset import --path /models/flow_grpo/geneval --name geneval   # on the server
    treegrpo dataset import --hub acme/prompts@main --name acme                # its HF cache
    treegrpo dataset list
    treegrpo dataset show geneval --split test --search cat --rows 5

An import shows one progress line on stderr while it waits (when stderr is a terminal and
--quiet is not given): the upload's bytes sent, then the server's phases as
GET /datasets/imports/{id} tells them (reading the source, storing the version), in MB and %.

Exit status as `treegrpo submit`: 0 done, 2 refused (the reason is printed, with the row of bad
input), 3 the API could not be reached or failed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from backend.cli import EXIT_BAD_REQUEST, EXIT_OK, EXIT_UNREACHABLE, _api_key, _err


def _client(args: argparse.Namespace) -> Any:
    from backend.client import ApiClient, ClientSettings

    settings = ClientSettings()
    # An import of a million rows takes a while on the server: a long read timeout.
    return ApiClient(args.api or settings.api_url, api_key=_api_key(args, settings), timeout=600)


def _line(row: dict[str, Any]) -> str:
    splits = ", ".join(f"{split} {count}" for split, count in sorted(row["splits"].items()))
    used = f", used by job(s) {', '.join(map(str, row['used_by']))}" if row["used_by"] else ""
    columns = ", ".join(row["columns"]) or "no metadata"
    return (
        f"{row['id']:>4}  {row['name']}  {row['sha256'][:12]}  {row['rows']} rows ({splits}); "
        f"{columns}{used}"
    )


def _find(client: Any, name_or_id: str) -> dict[str, Any]:
    if name_or_id.isdigit():
        found: dict[str, Any] = client._json(client.http.get(f"/datasets/{name_or_id}"))
        return found
    rows = client._json(client.http.get("/datasets", params={"limit": 500}))["data"]
    for row in rows:  # newest first
        if row["name"] == name_or_id:
            return dict(row)
    raise LookupError(f"no dataset {name_or_id!r}")


def run(args: argparse.Namespace) -> int:
    import httpx

    from backend.client import ApiError

    try:
        with _client(args) as client:
            if args.action == "import":
                row = _import(client, args)
                print(_line(row))
            elif args.action == "list":
                for row in client._json(client.http.get("/datasets"))["data"]:
                    print(_line(row))
            else:
                row = _find(client, args.dataset)
                print(_line(row))
                params = {"q": args.search, "limit": args.rows}
                if args.split:
                    params["split"] = args.split
                page = client._json(client.http.get(f"/datasets/{row['id']}/rows", params=params))
                print(f"split {page['split']}: {page['count']} matching rows")
                for item in page["data"]:
                    meta = (
                        json.dumps(item["metadata"], ensure_ascii=False) if item["metadata"] else ""
                    )
                    print(f"{item['row']:>8}  {item['prompt']}  {meta}".rstrip())
    except ApiError as exc:
        _err(str(exc))
        return EXIT_UNREACHABLE if exc.status >= 500 else EXIT_BAD_REQUEST
    except (LookupError, OSError, ValueError) as exc:
        _err(str(exc))
        return EXIT_BAD_REQUEST
    except httpx.HTTPError as exc:
        _err(f"cannot reach the API: {exc}")
        return EXIT_UNREACHABLE
    return EXIT_OK


POLL_SECONDS = 0.5
UPLOAD_BLOCK = 1 << 20


class ProgressLine:
    """One status line on a terminal, rewritten in place; ended with a newline when done."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.width = 0

    def show(self, text: str) -> None:
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = max(self.width, len(text))

    def end(self) -> None:
        if self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


def progress_line(args: argparse.Namespace) -> ProgressLine | None:
    """A line on stderr, unless --quiet or stderr is not a terminal (a log, a pipe)."""
    if getattr(args, "quiet", False) or not sys.stderr.isatty():
        return None
    return ProgressLine(sys.stderr)


def progress_text(phase: str, done: int, total: int) -> str:
    if total <= 0:  # "starting": the server has the request, the import has not read yet
        return f"{phase} ..."
    return f"{phase} {done / 1e6:.1f} of {total / 1e6:.1f} MB ({100 * done // total}%)"


class _Upload:
    """The file as a request body, block by block, counting the bytes sent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as handle:
            while block := handle.read(UPLOAD_BLOCK):
                self.sent += len(block)
                yield block


def _server_status(client: Any, progress_id: str) -> str:
    import httpx

    try:
        answer = client.http.get(f"/datasets/imports/{progress_id}")
    except httpx.HTTPError:
        answer = None
    if answer is None or answer.status_code != 200:
        return "importing on the server ..."  # not started, ended, or another API process
    item = answer.json()
    return progress_text(item["phase"], int(item["done"]), int(item["total"]))


def _waiting(
    client: Any,
    call: Callable[[], Any],
    line: ProgressLine,
    progress_id: str,
    upload: _Upload | None,
) -> Any:
    """`call()` in a thread, the line updated every POLL_SECONDS until it answers. A daemon
    thread: Ctrl-C ends the command at once (the server finishes or drops the import)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["answer"] = call()
        except BaseException as exc:  # handed to the waiting thread, raised there
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="dataset-import", daemon=True)
    worker.start()
    try:
        while True:
            worker.join(POLL_SECONDS)
            if not worker.is_alive():
                break
            if upload is not None and upload.sent < upload.size:
                line.show(progress_text("uploading", upload.sent, upload.size))
            else:
                line.show(_server_status(client, progress_id))
    finally:
        line.end()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["answer"]


def _import(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    given = [v for v in (args.file, args.path, args.hub) if v]
    if len(given) != 1:
        raise ValueError("give one of FILE (upload), --path (on the server) or --hub")
    line = progress_line(args)
    progress_id = secrets.token_urlsafe(16) if line is not None else None
    upload: _Upload | None = None
    if args.file:
        path = Path(args.file)
        params = {
            "name": args.name,
            "filename": path.name,
            "split": args.split,
            "prompt_column": args.prompt_column,
        }
        if progress_id is not None:
            params["progress_id"] = progress_id
        upload = _Upload(path)  # streamed: httpx sends it block by block
        body = upload

        def call() -> Any:
            return client.http.post("/datasets/upload", params=params, content=body)

    else:
        payload: dict[str, Any] = {
            "name": args.name,
            "split": args.split,
            "prompt_column": args.prompt_column,
            "progress_id": progress_id,
        }
        payload["path" if args.path else "hub"] = args.path or args.hub

        def call() -> Any:
            return client.http.post("/datasets", json=payload)

    if line is None or progress_id is None:
        response = call()
    else:
        response = _waiting(client, call, line, progress_id, upload)
    row: dict[str, Any] = client._json(response)
    return row


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dataset",
        help="import, list and show prompt datasets (through a running API)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    actions = parser.add_subparsers(dest="action", required=True)
    imp = actions.add_parser("import", help="upload a file, or import a server path or hub id")
    imp.add_argument("file", nargs="?", help=".txt, .jsonl, .csv or .parquet to upload")
    imp.add_argument("--name", required=True, help="what configs call it")
    imp.add_argument("--path", help="a file or dataset folder on the server (allowed roots)")
    imp.add_argument("--hub", help="ORG/NAME[@REVISION] in the server's Hugging Face cache")
    imp.add_argument("--split", default="train", help="the split a single file becomes")
    imp.add_argument("--prompt-column", default="prompt", help="the column holding prompts")
    imp.add_argument(
        "--quiet", action="store_true", help="no progress line (none either when not a terminal)"
    )
    actions.add_parser("list", help="every dataset version")
    show = actions.add_parser("show", help="a dataset and some of its rows")
    show.add_argument("dataset", help="its name (newest version) or id")
    show.add_argument("--split", help="default: train")
    show.add_argument("--search", default="", help="rows whose prompt holds this text")
    show.add_argument("--rows", type=int, default=10, help="rows to print (default 10)")
    for sub in (imp, actions.choices["list"], show):
        sub.add_argument("--api", help="API base URL (default: TREEGRPO_API_URL)")
        sub.add_argument("--api-key", help="X-API-Key (default: TREEGRPO_API_KEY)")
        sub.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="treegrpo")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
