"""`treegrpo dataset import|list|show`: prompt datasets through a running API (REST client).

    treegrpo dataset import prompts.jsonl --name hpdv2          # upload (streamed), one split
    treegrpo dataset import --path /models/flow_grpo/geneval --name geneval   # on the server
    treegrpo dataset import --hub acme/prompts@main --name acme                # its HF cache
    treegrpo dataset list
    treegrpo dataset show geneval --split test --search cat --rows 5

Exit status as `treegrpo submit`: 0 done, 2 refused (the reason is printed, with the row of bad
input), 3 the API could not be reached or failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

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


def _import(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    given = [v for v in (args.file, args.path, args.hub) if v]
    if len(given) != 1:
        raise ValueError("give one of FILE (upload), --path (on the server) or --hub")
    if args.file:
        path = Path(args.file)
        params = {
            "name": args.name,
            "filename": path.name,
            "split": args.split,
            "prompt_column": args.prompt_column,
        }
        with path.open("rb") as handle:  # streamed: httpx reads the file as it sends
            response = client.http.post("/datasets/upload", params=params, content=handle)
        row: dict[str, Any] = client._json(response)
        return row
    body = {"name": args.name, "split": args.split, "prompt_column": args.prompt_column}
    body["path" if args.path else "hub"] = args.path or args.hub
    row = client._json(client.http.post("/datasets", json=body))
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
