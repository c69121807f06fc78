"""The "no number moved" golden: short fixed-seed runs reduced to what a refactor must not change.

Each case is a `treegrpo train` run (each digits preset, and tiny-treegrpo on two gloo
processes) with overrides that make it take seconds while still reaching every part of an epoch:
two epochs, galleries at every epoch, trees logged, a checkpoint per epoch, the threaded
chunked scoring (`reward_workers`), the KL reference (Flow-GRPO's default), a sliding window
(MixGRPO) and a group spanning ranks (two processes). A run is reduced to a fingerprint:

- every logged metric, as the exact float written to metrics.jsonl, except wall-clock timings;
- a sha256 of every trained weight tensor and every optimizer-state tensor of every checkpoint;
- a sha256 of every file the run wrote under artifacts/ (tree.json, galleries, PNGs).

The goldens (golden-*.json beside this file) were recorded on the code BEFORE the issue-22
refactor (commit 9fc4b38); tests/core/test_no_number_moved.py compares the current code's
fingerprints with the one made on this platform. Floats depend on the CPU kernels torch dispatches
to, and those differ between CPU models of the same capability (an AMD EPYC and the machine of the
first golden, both AVX512, disagreed in 268 values), so each golden records the torch version, the
CPU capability and the CPU model it was made with; where none matches, the test skips and says why.
Later work may add metrics and artifact files; only values that were there may not move.

    git worktree add --detach /tmp/before 9fc4b38
    PYTHONPATH=/tmp/before .venv/bin/python tests/core/golden/record.py   # golden for this CPU
    .venv/bin/python tests/core/golden/record.py --check    # compare, print differences
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

GOLDEN_DIR = Path(__file__).parent
# Wall-clock and CPU-time measurements: they differ on every run by nature.
TIMING_PREFIXES = ("time/", "throughput/")
TIMING_NAMES = ("wall_clock", "cpu_clock")
LAUNCH_TIMEOUT_S = 180
# Files whose layout later issues changed on purpose, so their bytes differ with no number
# moved: tree.json keeps a latent path only where a branch can start (issue 28). The numbers it
# holds (rewards, advantages, log-probs) reach the metrics' summaries and the trained weights,
# which are still compared.
REWRITTEN_FILES = ("tree.json",)

# Every digits case: two epochs of two prompts, everything logged every epoch.
_SHORT = [
    "device=cpu",
    "epochs=2",
    "prompts_per_epoch=2",
    "sample_every=1",
    "checkpoint_every=1",
    "log_tree_every=1",
]


@dataclass(frozen=True)
class Case:
    preset: str
    overrides: tuple[str, ...]
    processes: int = 1


CASES: dict[str, Case] = {
    # Chunked scoring on two threads (overlap.py), a k = d = 2 tree.
    "digits-treegrpo": Case(
        "digits-treegrpo",
        (*_SHORT, "tree.k=2", "tree.depth=2", "reward_workers=2", "train.micro_batch=3"),
    ),
    "digits-dancegrpo": Case("digits-dancegrpo", (*_SHORT, "flat.group_size=4")),
    # Flow-GRPO's default KL (beta 0.01): the reference-policy branch of the update.
    "digits-flowgrpo": Case("digits-flowgrpo", (*_SHORT, "flat.group_size=4")),
    # The window slides every epoch, so epochs 1 and 2 train different steps.
    "digits-mixgrpo": Case(
        "digits-mixgrpo",
        (*_SHORT, "flat.group_size=4", "flat.window=2", "flat.slide_every=1"),
    ),
    # Two ranks; 4 draws from the tiny prompts; group-wide advantage statistics.
    "tiny-treegrpo-2proc": Case(
        "tiny-treegrpo",
        (
            "device=cpu",
            "gpus=2",
            "epochs=2",
            "prompts_per_epoch=4",
            "tree.backup=depth_norm",
            "log_tree_every=1",
            "sample_every=1",
            "train.micro_batch=3",
        ),
        processes=2,
    ),
}


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it ('' where it does not)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else ""


def platform() -> dict[str, str]:
    """What the floats depend on besides the code."""
    return {
        "torch": torch.__version__,
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": cpu_model(),
    }


def golden_path(for_platform: dict[str, str]) -> Path:
    slug = "-".join(
        "".join(c if c.isalnum() else "_" for c in for_platform.get(key, "")).strip("_")
        for key in ("cpu_model", "cpu", "torch")
    )
    return GOLDEN_DIR / f"golden-{slug}.json"


def goldens() -> list[dict[str, Any]]:
    """Every recorded golden, each with its platform."""
    return [json.loads(path.read_text()) for path in sorted(GOLDEN_DIR.glob("golden-*.json"))]


def _sha(tensor: torch.Tensor) -> str:
    data = tensor.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _tensor_shas(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """sha256 of every tensor in a nested state dict, by its path; other leaves as they are."""
    if isinstance(value, torch.Tensor):
        out[prefix] = _sha(value)
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            _tensor_shas(value[key], f"{prefix}/{key}", out)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _tensor_shas(item, f"{prefix}/{index}", out)
    else:
        out[prefix] = value


def fingerprint(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    metrics = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        kept = {
            name: value
            for name, value in sorted(entry["metrics"].items())
            if not name.startswith(TIMING_PREFIXES) and name not in TIMING_NAMES
        }
        metrics.append({"epoch": entry["epoch"], "metrics": kept})
    checkpoints: dict[str, Any] = {}
    for folder in sorted((run / "checkpoints").glob("epoch-*")):
        weights = load_file(str(folder / "model.safetensors"))
        # One digest over the optimizer's moments, steps and settings (a moved weight shows
        # by name above; the optimizer state only confirms it).
        optimizer: dict[str, Any] = {}
        _tensor_shas(torch.load(folder / "optimizer.pt", weights_only=True), "", optimizer)
        checkpoints[folder.name] = {
            "weights": {name: _sha(weights[name]) for name in sorted(weights)},
            "optimizer": hashlib.sha256(json.dumps(optimizer).encode()).hexdigest(),
        }
    artifacts = {
        str(path.relative_to(run)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((run / "artifacts").rglob("*"))
        if path.is_file()
    }
    return {"metrics": metrics, "checkpoints": checkpoints, "artifacts": artifacts}


def _launch_env() -> dict[str, str]:
    """Launched ranks: one thread each, loopback only, no inherited launcher state."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(
        OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"
    )
    return env


def run_case(case: Case, out: Path) -> dict[str, Any]:
    """Train the case into `out` (which must not exist) and fingerprint it. In-process runs use
    one intra-op thread, as each launched rank does, so the floats do not depend on the cores."""
    from treegrpo.cli import main
    from treegrpo.distributed import launch_command

    argv = ["train", "--preset", case.preset, "--quiet", "--out", str(out)]
    for assignment in case.overrides:
        argv += ["--set", assignment]
    if case.processes == 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            status = main(argv)
        finally:
            torch.set_num_threads(threads)
        if status != 0:
            raise RuntimeError(f"{case.preset}: treegrpo train returned {status}")
    else:
        result = subprocess.run(
            launch_command(argv, case.processes, cpu=True),
            env=_launch_env(),
            capture_output=True,
            text=True,
            timeout=LAUNCH_TIMEOUT_S,
        )
        if result.returncode != 0:
            raise RuntimeError(result.stdout[-3000:] + result.stderr[-3000:])
    return fingerprint(out)


def record_all(root: Path) -> dict[str, Any]:
    return {
        "platform": platform(),
        "cases": {name: run_case(case, root / name) for name, case in CASES.items()},
    }


def differences(golden: dict[str, Any], current: dict[str, Any], path: str = "") -> list[str]:
    """Every leaf of the golden that moved or went missing, by its path (exact comparison).

    Keys only the current fingerprint has (a metric or an artifact file added since) are not
    differences: they move no number that was there."""
    if isinstance(golden, dict) and isinstance(current, dict):
        found = []
        for key in sorted(golden, key=str):
            if str(key).endswith(REWRITTEN_FILES):
                continue
            if key not in current:
                found.append(f"{path}/{key}: missing now")
            else:
                found += differences(golden[key], current[key], f"{path}/{key}")
        return found
    if isinstance(golden, list) and isinstance(current, list) and len(golden) == len(current):
        return [
            line
            for index, (a, b) in enumerate(zip(golden, current, strict=True))
            for line in differences(a, b, f"{path}/{index}")
        ]
    return [] if golden == current else [f"{path}: {golden!r} -> {current!r}"]


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        current = record_all(Path(tmp))
    golden = golden_path(current["platform"])
    if "--check" in argv:
        found = differences(json.loads(golden.read_text()), current)
        print("\n".join(found) or "no number moved")
        return 1 if found else 0
    golden.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    print(f"wrote {golden}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
