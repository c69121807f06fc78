"""The backend's `treegrpo` subcommands, registered through the `treegrpo.commands` entry points:

    treegrpo serve [--host 127.0.0.1] [--port 8000] [--migrate] [--reload] [--workers N]
    treegrpo migrate [--url URL] [--revision head] [--down REV]
    treegrpo api-key create NAME [--role member|admin|viewer] | list [--all] | revoke ID_OR_NAME
    treegrpo secret set NAME --host H (value on stdin) | list | delete NAME
    treegrpo submit --preset NAME [--set key=value ...] [--kind train] [--name NAME] [--wait]

Imports stay inside the commands: `treegrpo --help` loads this module and must stay fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_BAD_REQUEST = 2
EXIT_UNREACHABLE = 3


def _err(message: str) -> None:
    print(f"treegrpo: {message}", file=sys.stderr)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def _db_problem(exc: Exception, url: str) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot use the database at {_safe_url(url)}: {first}"


# ---------------------------------------------------------------------------------------------
# serve


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from backend import migrate
    from backend.bootstrap import ensure_local_key, local_key_path
    from backend.settings import get_settings
    from backend.ui_hook import installed_uis

    if not args.ui:
        os.environ["TREEGRPO_SERVE_UI"] = "false"  # for backend.main, in every worker process
        get_settings.cache_clear()
    settings = get_settings()
    ui = settings.serve_ui and bool(installed_uis())
    workers = None if args.reload else args.workers
    if ui and workers is not None and workers > 1:
        _err(
            f"error: --workers {workers} with the dashboard mounted at /ui: the dashboard keeps "
            "per-process state (Gradio's event queue, its download links), so its events would "
            "land in processes that do not know them. Add --no-ui (or TREEGRPO_SERVE_UI=false) "
            "and serve the dashboard as one process of its own: python -m frontend --api "
            f"http://{args.host}:{args.port}"
        )
        return EXIT_BAD_REQUEST
    url = settings.resolved_database_url
    if args.migrate:
        try:
            migrate.upgrade(url)
        except SQLAlchemyError as exc:
            _err(_db_problem(exc, url))
            return EXIT_BAD_REQUEST
    migrated = False
    try:
        revision, head = migrate.current_revision(url), migrate.head_revision()
        migrated = revision == head
        if not migrated:
            _err(
                f"warning: the database at {_safe_url(url)} is at revision {revision}, not "
                f"{head}; run `treegrpo migrate` (or serve --migrate). Until then /ready "
                "answers 503."
            )
    except SQLAlchemyError as exc:
        _err(f"warning: {_db_problem(exc, url)}; /ready answers 503 until it is reachable")
    base = f"http://{args.host}:{args.port}"
    # `treegrpo up` passes --no-banner: it prints its own (backend/up.py) once all is ready.
    if args.banner:
        shown = f", dashboard {base}/ui" if ui else ""
        print(f"TreeGRPO API on {base}/api/v1 (docs {base}/docs{shown})", flush=True)
    if args.banner and not settings.database_url and migrated:
        # The embedded default: one local user, who gets a key without asking for one.
        key = ensure_local_key(settings)
        print(f"Local API key: {key}  (saved in {local_key_path(settings)})", flush=True)
    uvicorn.run(
        "backend.main:app",
        host=args.host,
        port=args.port,
        reload=args.reload,
        workers=workers,
        log_level=args.log_level,
        proxy_headers=True,
    )
    return EXIT_OK


def register_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the REST API (and the dashboard at /ui when installed)",
        description="Serve backend.main:app with uvicorn. Settings come from TREEGRPO_* "
        "variables or .env (TREEGRPO_DATABASE_URL, TREEGRPO_BROKER_URL, TREEGRPO_ARTIFACT_DIR, "
        "TREEGRPO_READS_REQUIRE_KEY). The schema is not touched unless --migrate is given. With "
        "the embedded default database (SQLite under TREEGRPO_DATA_DIR) a local API key is "
        "printed and saved in <data dir>/local-api-key.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--migrate", action="store_true", help="upgrade the schema to the latest revision first"
    )
    parser.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes (more than 1 needs --no-ui: the dashboard is one process)",
    )
    parser.add_argument(
        "--no-ui",
        dest="ui",
        action="store_false",
        help="serve the API alone, without the dashboard at /ui (TREEGRPO_SERVE_UI=false)",
    )
    parser.add_argument(
        "--no-banner",
        dest="banner",
        action="store_false",
        help="print no start-up lines (`treegrpo up` prints its own once all is ready)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
    )
    parser.set_defaults(func=cmd_serve)


# ---------------------------------------------------------------------------------------------
# migrate


def cmd_migrate(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from backend import migrate
    from backend.settings import get_settings

    url = args.url or get_settings().resolved_database_url
    try:
        if args.down:
            migrate.downgrade(url, args.down)
        else:
            migrate.upgrade(url, args.revision)
        revision = migrate.current_revision(url)
    except SQLAlchemyError as exc:
        _err(_db_problem(exc, url))
        return EXIT_BAD_REQUEST
    except Exception as exc:  # alembic's CommandError: an unknown revision, ...
        _err(f"migration failed: {exc}")
        return EXIT_BAD_REQUEST
    print(f"database {_safe_url(url)} is at revision {revision or 'base (empty)'}")
    return EXIT_OK


def register_migrate(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="create or upgrade the database schema (Alembic)",
        description="Alembic migrations, the only way the schema is made. Upgrades to --revision "
        "(default head), or with --down REV downgrades to REV ('base' empties the database).",
    )
    parser.add_argument("--url", help="database URL (default: TREEGRPO_DATABASE_URL or SQLite)")
    parser.add_argument("--revision", default="head", help="target revision (default head)")
    parser.add_argument("--down", metavar="REV", help="downgrade to REV instead")
    parser.set_defaults(func=cmd_migrate)


# ---------------------------------------------------------------------------------------------
# api-key


def _key_session(args: argparse.Namespace) -> tuple[Any, str]:
    from backend.db import session_scope
    from backend.settings import get_settings

    url = args.url or get_settings().resolved_database_url
    return session_scope(url), url


def cli_audit(
    session: Any, action: str, target_kind: str, target_id: object, **detail: Any
) -> None:
    """An audit entry for a change made with this command on the server: no API key acted, so
    the operator's login names who (cli:<user>)."""
    import getpass

    from backend import crud

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = "unknown"
    crud.record_audit(
        session,
        key_id=None,
        key_name=f"cli:{user}",
        action=action,
        target_kind=target_kind,
        target_id=target_id,
        detail=detail,
    )


def cmd_api_key_create(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from backend import crud
    from backend.models import NAME_CHARS

    name = args.name.strip()
    if not name or len(name) > NAME_CHARS or "\x00" in name:
        _err(f"a key name is 1 to {NAME_CHARS} characters")
        return EXIT_BAD_REQUEST
    scope, url = _key_session(args)
    try:
        with scope as session:
            row, key = crud.create_api_key(session, name=name, role=args.role)
            cli_audit(session, "key.create", "key", row.id, name=name, role=row.role)
    except SQLAlchemyError as exc:
        _err(_db_problem(exc, url))
        return EXIT_BAD_REQUEST
    print(key)
    print(
        f"created API key {row.id} ({name!r}, role {row.role}); this is the only time it is "
        "shown: store it now. Send it as the X-API-Key header (treegrpo submit reads "
        "TREEGRPO_API_KEY).",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_api_key_list(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from backend import crud

    scope, url = _key_session(args)
    try:
        with scope as session:
            rows = crud.list_api_keys(session, include_revoked=args.all)
    except SQLAlchemyError as exc:
        _err(_db_problem(exc, url))
        return EXIT_BAD_REQUEST
    if not rows:
        print("no API keys" + ("" if args.all else " (active); --all lists revoked ones too"))
        return EXIT_OK

    def when(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M") if value else "-"

    table = [("ID", "NAME", "ROLE", "PREFIX", "CREATED", "REVOKED")]
    table += [
        (str(r.id), r.name, r.role, r.prefix + "...", when(r.created_at), when(r.revoked_at))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return EXIT_OK


def cmd_api_key_revoke(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from backend import crud
    from backend.errors import NotFound

    target: str = args.key
    scope, url = _key_session(args)
    try:
        with scope as session:
            if target.isdigit():
                count = crud.revoke_api_key(session, key_id=int(target))
            else:
                count = crud.revoke_api_key(session, name=target)
            cli_audit(session, "key.revoke", "key", target, revoked=count)
    except NotFound:
        _err(f"no active API key with id or name {target!r} (see `treegrpo api-key list`)")
        return EXIT_JOB_FAILED
    except SQLAlchemyError as exc:
        _err(_db_problem(exc, url))
        return EXIT_BAD_REQUEST
    print(f"revoked {count} key{'s' if count != 1 else ''}")
    return EXIT_OK


def register_api_key(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "api-key",
        help="create, list or revoke API keys",
        description="API keys for the X-API-Key header. Only a hash of each key is stored: "
        "`create` prints the key once.",
    )
    parser.add_argument("--url", help="database URL (default: TREEGRPO_DATABASE_URL or SQLite)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a key and print it (once)")
    create.add_argument("name", metavar="NAME", help="who or what the key is for")
    create.add_argument(
        "--role",
        choices=["member", "admin", "viewer"],
        default="member",
        help="member (default): submits and manages its own runs; admin: everything, keys and "
        "secrets included; viewer: reads only",
    )
    create.set_defaults(func=cmd_api_key_create)
    listing = actions.add_parser("list", help="list keys (active ones; --all for revoked too)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    listing.set_defaults(func=cmd_api_key_list)
    revoke = actions.add_parser("revoke", help="revoke a key by id, or every active key of a name")
    revoke.add_argument("key", metavar="ID_OR_NAME")
    revoke.set_defaults(func=cmd_api_key_revoke)


# ---------------------------------------------------------------------------------------------
# secret


def cmd_secret_set(args: argparse.Namespace) -> int:
    """The value comes from stdin (never argv, which `ps` shows), or a prompt on a terminal."""
    import getpass

    from sqlalchemy.exc import SQLAlchemyError

    from backend.crud.secrets import SecretError, set_secret
    from backend.settings import get_settings
    from treegrpo.egress import parse_hosts
    from treegrpo.secrets import NAME

    if not NAME.match(args.name):
        _err("a secret name is letters, digits, _ . - (up to 128), starting with a letter or _")
        return EXIT_BAD_REQUEST
    try:
        parse_hosts(args.host)
    except ValueError as exc:
        _err(f"--host: {exc}")
        return EXIT_BAD_REQUEST
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of secret {args.name}: ")
    else:
        value = sys.stdin.read().rstrip("\r\n")
    if not value:
        _err(
            "empty value: pipe the secret on stdin, e.g. `printenv KEY | treegrpo secret set NAME --host H`"
        )
        return EXIT_BAD_REQUEST
    scope, url = _key_session(args)
    try:
        with scope as session:
            new = set_secret(
                session,
                name=args.name,
                value=value,
                hosts=args.host,
                secrets_key=get_settings().secrets_key,
            )
            cli_audit(
                session, "secret.set", "secret", args.name, created=new, hosts=list(args.host)
            )
    except SecretError as exc:
        _err(str(exc))
        return EXIT_BAD_REQUEST
    except SQLAlchemyError as exc:
        _err(_db_problem(exc, url))
        return EXIT_BAD_REQUEST
    print(
        f"{'stored' if new else 'replaced'} secret {args.name!r}, sealed, for "
        f"{', '.join(args.host)} only; name it in a config as <field>_secret: {args.name}",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_secret_list(args: argparse.Namespace) -> int:
    from backend.crud.secrets import list_secrets

    scope, _ = _key_session(args)
    with scope as session:
        rows = list_secrets(session)
    for name, updated, hosts in rows:
        print(f"{name}\t{updated}\t{','.join(hosts) or '(no hosts: cannot be sent anywhere)'}")
    if not rows:
        print("no secrets", file=sys.stderr)
    return EXIT_OK


def cmd_secret_delete(args: argparse.Namespace) -> int:
    from backend.crud.secrets import delete_secret

    scope, _ = _key_session(args)
    with scope as session:
        deleted = delete_secret(session, name=args.name)
        if deleted:
            cli_audit(session, "secret.delete", "secret", args.name)
    if not deleted:
        _err(f"no secret named {args.name!r}")
        return EXIT_BAD_REQUEST
    return EXIT_OK


def register_secret(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "secret",
        help="store, list or delete server-side secrets",
        description="Secrets a config names as <field>_secret: NAME (for example "
        "reward_options.remote.api_key_secret), sealed in the database with "
        "TREEGRPO_SECRETS_KEY. Only workers open them, and send them only to the hosts "
        "each was stored for; no API route reads or writes them (an admin's tool on the "
        "server).",
    )
    parser.add_argument("--url", help="database URL (default: TREEGRPO_DATABASE_URL or SQLite)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    store = actions.add_parser("set", help="store or replace a secret; the value is read on stdin")
    store.add_argument("name", metavar="NAME")
    store.add_argument(
        "--host",
        action="append",
        required=True,
        metavar="HOST",
        help="a host the secret may be sent to: host:port, host (the scheme's default port) "
        "or host:*; repeat for more. A job naming the secret with another URL is refused.",
    )
    store.set_defaults(func=cmd_secret_set)
    listing = actions.add_parser("list", help="list secret names and hosts (never values)")
    listing.set_defaults(func=cmd_secret_list)
    delete = actions.add_parser("delete", help="delete a secret")
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(func=cmd_secret_delete)


# ---------------------------------------------------------------------------------------------
# submit


def _submit_body(args: argparse.Namespace) -> dict[str, Any]:
    from treegrpo.config import ConfigError, parse_assignment

    config: dict[str, Any] = {}
    for text in args.set:
        try:
            key, value = parse_assignment(text)
        except ConfigError as exc:
            raise ValueError(f"--set {text!r}: {exc.reason}") from exc
        config[key] = value
    params: dict[str, Any] = {}
    for text in args.param:
        try:
            key, value = parse_assignment(text)
        except ConfigError as exc:
            raise ValueError(f"--param {text!r}: {exc.reason}") from exc
        params[key] = value
    body: dict[str, Any] = {"kind": args.kind, "preset": args.preset, "config": config}
    if params:
        body["params"] = params
    if args.name is not None:
        body["name"] = args.name
    return body


def _api_key(args: argparse.Namespace, settings: Any) -> str | None:
    if args.api_key:
        return str(args.api_key)
    if settings.api_key:
        return str(settings.api_key)
    from backend.bootstrap import LOCAL_KEY_FILE

    try:
        return (settings.data_dir / LOCAL_KEY_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


class _Follower:
    """Prints a job's progress from its events: status changes and one line per metric step."""

    def __init__(self, job: dict[str, Any], out: Any) -> None:
        self.job = job
        self.out = out
        self.last_step: int | None = None
        self.printed_status = job.get("status")

    def on_event(self, event: str, data: Any) -> bool:
        """Returns True at the end of the job."""
        if event in ("status", "end") and isinstance(data, dict):
            self.job = data
            if data.get("status") != self.printed_status:
                self.printed_status = data.get("status")
                extra = f" ({data['error']})" if data.get("error") else ""
                print(f"job {data.get('id')}: {self.printed_status}{extra}", file=self.out)
        elif event == "metrics" and isinstance(data, dict):
            steps: dict[int, dict[str, float]] = {}
            for point in data.get("points", []):
                steps.setdefault(int(point["step"]), {})[str(point["name"])] = point["value"]
            for step in sorted(steps):
                if self.last_step is not None and step <= self.last_step:
                    continue
                self.last_step = step
                self._print_step(step, steps[step])
        elif event == "tree" and isinstance(data, dict):
            print(f"  tree logged: epoch {data.get('epoch')} (id {data.get('id')})", file=self.out)
        return event == "end"

    def _print_step(self, step: int, values: dict[str, float]) -> None:
        total = self.job.get("progress_total") or "?"
        shown = []
        reward = values.get("reward_mean")
        if reward is not None:
            shown.append(f"reward {reward:.4f}")
        for name in sorted(values):
            if name != "reward_mean" and len(shown) < 4:
                shown.append(f"{name} {values[name]:.4g}")
        print(f"epoch {step}/{total}  " + "  ".join(shown), file=self.out, flush=True)


def follow_job(client: Any, job: dict[str, Any], out: Any = None) -> dict[str, Any]:
    """Follow /events until the job ends (reconnecting with since_step when the stream drops);
    returns the final job."""
    import httpx

    out = out or sys.stderr
    follower = _Follower(job, out)
    failures = 0
    while True:
        try:
            for event, data in client.events(job["id"], since_step=follower.last_step):
                failures = 0
                if follower.on_event(event, data):
                    return follower.job
        except httpx.TransportError as exc:
            failures += 1
            if failures > 10:
                raise
            print(f"  (connection lost: {exc}; reconnecting)", file=out)
            time.sleep(min(2.0 * failures, 10.0))
            continue
        # The server closed the stream without `end` (its time limit): look, then reconnect.
        current = client.job(job["id"])
        if current.get("status") not in ("queued", "running", "cancelling"):
            follower.on_event("end", current)
            return follower.job


def cmd_submit(args: argparse.Namespace) -> int:
    import httpx

    from backend.client import ApiClient, ApiError, ClientSettings

    settings = ClientSettings()
    api_url = args.api or settings.api_url
    try:
        body = _submit_body(args)
    except ValueError as exc:
        _err(str(exc))
        return EXIT_BAD_REQUEST
    key = _api_key(args, settings)
    if not key:
        _err(
            "no API key: pass --api-key, set TREEGRPO_API_KEY, or run the embedded server "
            "(`treegrpo serve`/`treegrpo up`), which saves one in <data dir>/local-api-key"
        )
        return EXIT_BAD_REQUEST
    with ApiClient(api_url, api_key=key) as client:
        try:
            job = client.submit(body, idempotency_key=args.idempotency_key)
        except ApiError as exc:
            _err(str(exc))
            return EXIT_UNREACHABLE if exc.status >= 500 else EXIT_BAD_REQUEST
        except httpx.HTTPError as exc:
            _err(f"cannot reach the API at {api_url}: {exc}")
            return EXIT_UNREACHABLE
        print(job["id"], flush=True)
        if not args.wait:
            return EXIT_OK
        print(
            f"job {job['id']} ({job['kind']}, {job['algorithm']}, {job['progress_total']} "
            f"epochs): {job['status']}",
            file=sys.stderr,
        )
        try:
            final = follow_job(client, job)
        except KeyboardInterrupt:
            _err(f"stopped following job {job['id']}; it goes on (cancel it through the API)")
            return 130
        except ApiError as exc:
            _err(str(exc))
            return EXIT_UNREACHABLE
        except httpx.HTTPError as exc:
            _err(f"lost the API at {api_url}: {exc}")
            return EXIT_UNREACHABLE
    status = final.get("status")
    reward = final.get("latest_reward")
    summary = f"job {final.get('id')} {status}"
    if reward is not None:
        summary += f", last reward {reward:.4f}"
    if final.get("error"):
        summary += f": {final['error']}"
    print(summary, file=sys.stderr)
    return EXIT_OK if status == "succeeded" else EXIT_JOB_FAILED


def register_submit(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "submit",
        help="submit a job to a running API and print its id",
        description="A small REST client: POST /api/v1/jobs with a preset and --set overrides, "
        "print the new job's id on stdout and, with --wait, follow its progress (on stderr) "
        "until it ends.",
        epilog="Exit status: 0 submitted (with --wait: the job succeeded); 1 the job failed, "
        "was cancelled, interrupted or lost; 2 the request was refused (invalid settings: "
        "each wrong field is printed); 3 the API could not be reached or failed.",
    )
    parser.add_argument("--preset", help="a preset name (GET /api/v1/presets)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. --set epochs=20 --set tree.k=4 (repeatable)",
    )
    parser.add_argument(
        "--kind", default="train", choices=["train", "sample", "evaluate"], help="default train"
    )
    parser.add_argument("--name", help="a name for listings (default: the preset)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="kind-specific parameter, e.g. --param source_job_id=3 (repeatable)",
    )
    parser.add_argument(
        "--api", help="API base URL (default: TREEGRPO_API_URL or http://127.0.0.1:8000)"
    )
    parser.add_argument(
        "--api-key",
        help="X-API-Key (default: TREEGRPO_API_KEY, else the embedded server's "
        "<data dir>/local-api-key)",
    )
    parser.add_argument(
        "--idempotency-key", help="retrying with the same key never creates a second job"
    )
    parser.add_argument(
        "--wait", action="store_true", help="follow the job's progress until it ends"
    )
    parser.set_defaults(func=cmd_submit)
