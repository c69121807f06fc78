"""Checkpoints that resume exactly: weights, optimizer, RNG states, progress and config.

Layout: ROOT/epoch-000004/{model.safetensors, optimizer.pt, rng.pt, state.json}, plus lora/ (the
diffusers LoRA export, treegrpo.export) in a LoRA run's. A checkpoint is
written to a temporary folder and renamed into place, so a crash never leaves a half checkpoint
that `latest_checkpoint` would pick.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

PREFIX = "epoch-"


@dataclass
class TrainState:
    """Progress that is not in the weights or the optimizer."""

    epoch: int = 0  # epochs completed
    images_seen: int = 0
    model_evals: int = 0
    wall_clock: float = 0.0  # seconds of training, summed over resumes
    # The last gallery's held-out rewards (eval/<name>_mean) and its epoch, for model cards.
    held_out: dict[str, float] = field(default_factory=dict)
    held_out_epoch: int = -1
    # The over-optimisation watch's last (reward gap, gallery diversity) (treegrpo/overopt.py).
    watch: list[float] | None = None


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters training changes: all of them in a full fine-tune, the adapters with LoRA
    (so a LoRA checkpoint of a multi-GB model stays small). Frozen weights come from the model."""
    return {
        name: param.detach().to("cpu").contiguous()
        for name, param in module.named_parameters()
        if param.requires_grad
    }


def load_trainable_state(module: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load what `trainable_state` saved; every saved tensor must find its parameter."""
    missing = sorted(set(weights) - {name for name, _ in module.named_parameters()})
    if missing:
        raise ValueError(
            f"checkpoint holds {len(missing)} tensors the model lacks, e.g. {missing[:3]}; "
            "was it made with another model or LoRA setting?"
        )
    module.load_state_dict(weights, strict=False)


def checkpoint_dir(root: Path, epoch: int) -> Path:
    return root / f"{PREFIX}{epoch:06d}"


def save_checkpoint(
    root: Path,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    config: dict[str, Any],
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write the checkpoint of `state.epoch`; `extra(folder)` adds files to it (an export)
    before it is renamed into place."""
    target = checkpoint_dir(root, state.epoch)
    tmp = root / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = trainable_state(module)
    save_file(weights, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(
        {"torch": torch.get_rng_state(), "python": random.getstate()},
        tmp / "rng.pt",
    )
    (tmp / "state.json").write_text(
        json.dumps({"state": asdict(state), "config": config}, indent=1)
    )
    if extra is not None:
        extra(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under root, or None."""
    if not root.is_dir():
        return None
    candidates = sorted(
        p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / "state.json").exists()
    )
    return candidates[-1] if candidates else None


def load_checkpoint(
    path: Path, module: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> tuple[TrainState, dict[str, Any]]:
    """Restore weights (and optimizer and RNG) in place; returns the progress and config."""
    device = next(module.parameters()).device
    load_trainable_state(module, load_file(str(path / "model.safetensors"), device=str(device)))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device))
    rng = torch.load(path / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    document = json.loads((path / "state.json").read_text())
    return TrainState(**document["state"]), document["config"]
