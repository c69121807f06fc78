"""Epoch time with the reward scored serially vs overlapped with tree expansion.

Starts `treegrpo reward-serve --reward digit_judge` with an injected latency per batch (50 ms and
500 ms: a stand-in for a large reward model on another device), trains the shipped digits model
(TreeGRPO, k = 3, d = 3, 4 prompts: 108 leaves an epoch) against it through the `remote` client,
once with chunks scored serially (`reward_concurrency = 0`) and once overlapped (chunks in
flight on threads while later trees grow), and prints the mean epoch time of each and the ratio.
The client sends 8 images a request (`--batch-size`), as a memory-bound reward model would take
them: 14 requests an epoch, each paying the injected latency when scored serially.
Both runs score the same chunks, so their rewards and weights are identical (tests/core/
test_overlap.py); only the time differs.

    python bench/reward_overlap.py                      # 50 and 500 ms, 3 epochs each
    python bench/reward_overlap.py --latency-ms 500 --epochs 2 --out bench/results/reward_overlap.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from treegrpo.config import resolve_config  # noqa: E402
from treegrpo.models.registry import load_model  # noqa: E402
from treegrpo.rewards.registry import load_run_rewards  # noqa: E402
from treegrpo.trainer import REMOTE_SCORE_CONCURRENCY, Trainer  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(latency_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rewardserve",
            "--reward",
            "digit_judge",
            "--port",
            str(port),
            "--delay-ms",
            str(latency_ms),
            "--max-batch",
            "128",
            "--max-wait-ms",
            "5",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                return process, f"{base}/score"
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("reward-serve did not become ready")


def make_trainer(url: str, concurrency: int, batch_size: int) -> Trainer:
    config = resolve_config(
        "digits-treegrpo",
        overrides={
            "reward": "remote",
            "reward_options": {"remote": {"url": url, "batch_size": batch_size}},
            "device": "cpu",
            "sample_every": 0,
            "log_tree_every": 0,
            "checkpoint_every": 0,
        },
    )
    trainer = Trainer(
        config, load_model(config.model, "cpu", config.dtype), load_run_rewards(config)
    )
    trainer.reward_concurrency = concurrency
    return trainer


def epoch_seconds(url: str, epochs: int, batch_size: int) -> dict[str, list[float]]:
    """Serial and overlapped epochs, alternated so that a shared machine's load drift hits both
    alike; epoch 0 of each warms up (model, judge, connections) and is not counted."""
    trainers = {
        "serial": make_trainer(url, 0, batch_size),
        "overlapped": make_trainer(url, REMOTE_SCORE_CONCURRENCY, batch_size),
    }
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for epoch in range(epochs + 1):
        for name, trainer in trainers.items():
            started = time.perf_counter()
            trainer.train_epoch(epoch)
            if epoch:
                times[name].append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, action="append")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="images per request (the client's batch_size)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    for latency in args.latency_ms or [50.0, 500.0]:
        process, url = start_server(latency)
        try:
            times = epoch_seconds(url, args.epochs, args.batch_size)
            serial, overlapped = times["serial"], times["overlapped"]
        finally:
            process.terminate()
            process.wait(10)
        row = {
            "latency_ms_per_batch": latency,
            "serial_epoch_s": statistics.mean(serial),
            "overlapped_epoch_s": statistics.mean(overlapped),
            "ratio": statistics.mean(serial) / statistics.mean(overlapped),
            "serial_epochs_s": serial,
            "overlapped_epochs_s": overlapped,
        }
        results.append(row)
        print(
            f"latency {latency:5.0f} ms/batch: serial {row['serial_epoch_s']:.2f} s/epoch, "
            f"overlapped {row['overlapped_epoch_s']:.2f} s/epoch, ratio {row['ratio']:.2f}x",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps({"epochs": args.epochs, "results": results}, indent=1))


if __name__ == "__main__":
    main()
