"""`treegrpo reward-serve`, registered through the `treegrpo.commands` entry points (also
`python -m rewardserve`). Imports stay inside the command: `treegrpo --help` loads this module.

    treegrpo reward-serve --reward digit_judge --port 8100
    treegrpo reward-serve --reward pickscore --option path=ORG/NAME --device cuda:1 --port 8100
    treegrpo reward-serve --reward hps=0.7 --reward pickscore=0.3 --option pickscore.path=DIR
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

API_KEY_ENV = "TREEGRPO_REWARD_API_KEY"


def _weights(specs: list[str]) -> dict[str, float]:
    weights: dict[str, float] = {}
    for spec in specs:
        name, _, weight = spec.partition("=")
        weights[name.strip()] = float(weight) if weight else 1.0
    return weights


def _options(specs: list[str], weights: dict[str, float]) -> dict[str, dict[str, Any]]:
    """`key=value` (the only reward's option) or `reward.key=value`."""
    options: dict[str, dict[str, Any]] = {name: {} for name in weights}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep:
            raise ValueError(f"--option {spec!r}: expected key=value")
        name, dot, option = key.partition(".")
        if not dot:
            if len(weights) != 1:
                raise ValueError(f"--option {spec!r}: name the reward (reward.key=value)")
            name, option = next(iter(weights)), key
        if name not in options:
            raise ValueError(f"--option {spec!r}: {name!r} is not a served reward")
        options[name][option] = value
    return options


def cmd_reward_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rewardserve.app import Limits, create_app
    from rewardserve.scorer import Scorer

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    try:
        weights = _weights(args.reward)
        scorer = Scorer(
            weights,
            _options(args.option, weights),
            args.device,
            delay=args.delay_ms / 1000.0,
        )
    except ValueError as exc:
        print(f"treegrpo reward-serve: {exc}", file=sys.stderr)
        return 2
    limits = Limits(
        max_batch=args.max_batch,
        max_wait=args.max_wait_ms / 1000.0,
        max_body_bytes=args.max_body_mb * 2**20,
        max_items=args.max_items,
        max_pixels=args.max_pixels,
    )
    if not api_key and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"treegrpo reward-serve: warning: no API key and bound to {args.host}; anyone who "
            f"can reach port {args.port} can use this reward (set --api-key or {API_KEY_ENV})",
            file=sys.stderr,
        )
    print(
        f"reward-serve: {'+'.join(weights)} on {args.device}, http://{args.host}:{args.port}/score",
        flush=True,
    )
    uvicorn.run(
        create_app(scorer, limits, api_key),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
    )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reward",
        action="append",
        required=True,
        help="a registered reward; NAME=WEIGHT and repeat for a weighted set (answers the sum)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        help="a reward option, key=value (or reward.key=value for a set), e.g. path=DIR",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda:1")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument(
        "--api-key", default=None, help=f"bearer key clients must send (or {API_KEY_ENV})"
    )
    parser.add_argument("--max-batch", type=int, default=32, help="images per model call")
    parser.add_argument(
        "--max-wait-ms", type=float, default=10.0, help="how long a batch waits to fill"
    )
    parser.add_argument("--max-body-mb", type=int, default=64, help="request size limit")
    parser.add_argument("--max-items", type=int, default=1024, help="images per request")
    parser.add_argument("--max-pixels", type=int, default=4096 * 4096, help="per image")
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="added latency per batch (benchmarks only)"
    )
    parser.add_argument("--log-level", default="warning")
    parser.set_defaults(func=cmd_reward_serve)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "reward-serve",
        help="serve a reward over HTTP for the `remote` client",
        description="Serve a registered reward (or a weighted set) over HTTP with dynamic "
        "batching, /health, /ready and /info, per-item errors and an optional bearer key.",
    )
    add_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }.items():
        os.environ.setdefault(key, value)
    parser = argparse.ArgumentParser(prog="treegrpo reward-serve")
    add_arguments(parser)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
