"""`treegrpo experiment create|list|show|cancel|resume|delete`: experiments through the REST API.

    treegrpo experiment create --experiment-preset digits-methods
    treegrpo experiment create --preset digits-treegrpo --axis tree.k=2,3,4 --axis seed=0,1,2 \\
        --seconds 60 --eval-count 512
    treegrpo experiment show 3      # the grid, time to each target level, paired ratios
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from treegrpo.statistics import summary_text

EXIT_OK, EXIT_BAD_REQUEST, EXIT_UNREACHABLE = 0, 2, 3


def _value(text: str) -> Any:
    """A JSON value where it parses (numbers, true, null), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def create_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /experiments body of `experiment create`'s options."""
    body: dict[str, Any] = {}
    for name in ("name", "experiment_preset", "preset"):
        if getattr(args, name):
            body[name] = getattr(args, name)
    if args.reference:
        body["reference_group"] = args.reference
    axes: dict[str, list[Any]] = {}
    for text in args.axis:
        path, sep, values = text.partition("=")
        if not sep or not path or not values:
            raise ValueError(f"--axis {text!r}: expected PATH=V1,V2,... (e.g. tree.k=2,3,4)")
        axes[path.strip()] = [_value(v.strip()) for v in values.split(",")]
    if axes:
        body["axes"] = axes
    config: dict[str, Any] = {}
    for text in args.set:
        key, sep, value = text.partition("=")
        if not sep:
            raise ValueError(f"--set {text!r}: expected KEY=VALUE")
        config[key.strip()] = _value(value.strip())
    if config:
        body["config"] = config
    if args.epochs is not None:
        body["budget"] = {"epochs": args.epochs}
    elif args.seconds is not None:
        body["budget"] = {"seconds": args.seconds}
    evaluation = {
        k: v
        for k, v in (
            ("count", args.eval_count),
            ("every", args.eval_every),
            ("noise_seed", args.noise_seed),
        )
        if v is not None
    }
    if evaluation:
        body["eval"] = evaluation
    return body


def show_text(experiment: dict[str, Any]) -> str:
    """What `experiment show` prints: the runs, then the statistics as tables."""
    lines = [f"experiment {experiment['id']}: {experiment['name']}  {experiment['status_counts']}"]
    for run in experiment["runs"]:
        lines.append(
            f"  job {run['job_id']:>5}  {run['status']:<11} "
            f"{run['progress_step']}/{run['progress_total']}  {run['name']}"
        )
    stats = experiment.get("statistics") or {}
    if not stats.get("groups"):
        return "\n".join(lines)
    targets = stats.get("targets") or {}
    lines.append(
        f"base held-out reward {stats.get('base_reward')}, best {stats.get('best_reward')}; "
        f"targets {', '.join(f'{k}: {v:.4f}' for k, v in targets.items())}"
    )
    lines.append("group | final reward | CPU s/iter | CPU s to 50% of the gain")
    for group in stats["groups"]:
        half = group["time_to_target"].get("0.5", {}).get("cpu_clock")
        lines.append(
            f"{group['group']} | {summary_text(group['final_reward'])} | "
            f"{summary_text(group['cpu_seconds_per_iteration'], 2)} | {summary_text(half, 1)}"
        )
    for ratio in stats.get("ratios", []):
        if ratio["clock"] != "cpu_clock" or ratio["ratio"] is None:
            continue
        lines.append(
            f"{ratio['reference']} vs {ratio['group']} at {ratio['level']:g}: "
            f"{ratio['ratio']:.2f}x sooner [{ratio['low']:.2f}-{ratio['high']:.2f}] "
            f"({len(ratio['per_seed'])} seeds, {ratio['censored']} bounded)"
        )
    lines.append(f"Pareto front (CPU s/iter vs final reward): {', '.join(stats['pareto'])}")
    return "\n".join(lines)


def cmd_experiment(args: argparse.Namespace) -> int:
    import httpx

    from backend.cli import _api_key, _err
    from backend.client import ApiClient, ApiError, ClientSettings

    settings = ClientSettings()
    api_url = args.api or settings.api_url
    key = _api_key(args, settings)
    with ApiClient(api_url, api_key=key) as client:
        try:
            if args.action == "create":
                try:
                    body = create_body(args)
                except ValueError as exc:
                    _err(str(exc))
                    return EXIT_BAD_REQUEST
                made = client._json(client.http.post("/experiments", json=body))
                print(made["id"])
                print(show_text(made), file=sys.stderr)
            elif args.action == "list":
                page = client._json(client.http.get("/experiments"))
                for row in page["data"]:
                    print(f"{row['id']:>5}  {row['name']}  {row['status_counts']}")
            elif args.action == "show":
                one = client._json(client.http.get(f"/experiments/{args.id}"))
                print(json.dumps(one, indent=1) if args.json else show_text(one))
            elif args.action == "delete":
                answer = client.http.delete(f"/experiments/{args.id}")
                if answer.status_code != 204:
                    client._json(answer)  # raises ApiError with the API's reason
                print(f"experiment {args.id} and its runs deleted", file=sys.stderr)
            else:
                done = client._json(client.http.post(f"/experiments/{args.id}/{args.action}"))
                print(show_text(done))
        except ApiError as exc:
            _err(str(exc))
            return EXIT_UNREACHABLE if exc.status >= 500 else EXIT_BAD_REQUEST
        except httpx.HTTPError as exc:
            _err(f"cannot reach the API at {api_url}: {exc}")
            return EXIT_UNREACHABLE
    return EXIT_OK


def register_experiment(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="grids of runs with statistics (create, list, show, cancel, resume, delete)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--api", help="API base URL (default: TREEGRPO_API_URL)")
    parser.add_argument("--api-key", help="X-API-Key (default: TREEGRPO_API_KEY)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="expand a grid into runs; prints the id")
    create.add_argument("--experiment-preset", help="a named experiment (e.g. digits-methods)")
    create.add_argument("--preset", help="the base preset")
    create.add_argument("--name")
    create.add_argument(
        "--axis",
        action="append",
        default=[],
        metavar="PATH=V1,V2",
        help="an axis: a setting path (or preset) and its values; seed=0,1,2 for seeds",
    )
    create.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    budget = create.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, help="budget: epochs per run")
    budget.add_argument("--seconds", type=float, help="budget: seconds of training per run")
    create.add_argument("--eval-count", type=int, help="held-out images per evaluation")
    create.add_argument("--eval-every", type=int, help="epochs between evaluations")
    create.add_argument("--noise-seed", type=int, help="seed of the shared held-out noise")
    create.add_argument("--reference", help="the group paired ratios compare against")
    actions.add_parser("list", help="experiments, newest first")
    for name, text in (
        ("show", "runs and statistics"),
        ("cancel", "stop every queued or running run"),
        ("resume", "queue every stopped run again"),
        ("delete", "delete the experiment and its runs (cancel it first)"),
    ):
        one = actions.add_parser(name, help=text)
        one.add_argument("id", type=int)
        if name == "show":
            one.add_argument("--json", action="store_true", help="the whole answer as JSON")
    parser.set_defaults(func=cmd_experiment)
