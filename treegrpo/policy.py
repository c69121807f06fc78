"""A policy to sample with: a model as loaded, or as a training checkpoint left it.

Sample, evaluate and branch jobs grow images from "the policy of job J at epoch E". A checkpoint
holds only the tensors training changed (all weights, or the LoRA adapters), plus the run's
config, so the model is built from that config (same model, same LoRA rank) before the tensors
are loaded on top.

    adapter = load_policy(config, checkpoint=Path("runs/a/checkpoints/epoch-000010"))
    nearest_checkpoint(Path("runs/a/checkpoints"), epoch=19)  # epoch-000020, if it exists
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from treegrpo.checkpoint import PREFIX, checkpoint_weights, load_trainable_state
from treegrpo.config import RunConfig
from treegrpo.ema import EMA_FILE
from treegrpo.models.base import ModelAdapter


def checkpoint_epochs(root: Path) -> dict[int, Path]:
    """Complete checkpoints under `root` by epoch (those with a state.json)."""
    if not root.is_dir():
        return {}
    found = {}
    for path in root.iterdir():
        if path.name.startswith(PREFIX) and (path / "state.json").exists():
            try:
                found[int(path.name[len(PREFIX) :])] = path
            except ValueError:
                continue
    return dict(sorted(found.items()))


def nearest_checkpoint(root: Path, epoch: int) -> tuple[int, Path] | None:
    """The checkpoint closest to `epoch` (the earlier one on a tie), or None when there is none."""
    epochs = checkpoint_epochs(root)
    if not epochs:
        return None
    best = min(epochs, key=lambda e: (abs(e - epoch), e))
    return best, epochs[best]


def checkpoint_config(checkpoint: Path) -> dict[str, Any]:
    """The run config a checkpoint was written with."""
    config: dict[str, Any] = json.loads((checkpoint / "state.json").read_text())["config"]
    return config


def has_ema(checkpoint: Path | None) -> bool:
    """Whether a checkpoint keeps an EMA of its weights (a run with train.ema)."""
    return checkpoint is not None and (checkpoint / EMA_FILE).is_file()


def load_policy(
    config: RunConfig, checkpoint: Path | None = None, ema: bool = False
) -> ModelAdapter:
    """`config.model` on `config.device`, with the weights of `checkpoint` when given: its EMA
    weights with `ema` where it keeps them (`has_ema`), else its trained weights.

    The checkpoint's own config decides the model and LoRA rank (its tensors only fit that
    model); `config` decides device and dtype. Raises ValueError when the checkpoint's tensors
    do not fit the model.
    """
    from treegrpo.models.registry import load_model_for

    model, lora_rank = config.model, 0
    if checkpoint is not None:
        saved = RunConfig.from_dict(checkpoint_config(checkpoint))
        model, lora_rank = saved.model, saved.train.lora_rank
    adapter = load_model_for(config, model=model)
    if checkpoint is not None:
        if lora_rank:
            adapter.enable_lora(lora_rank)
        # Either layout: model.safetensors, or a sharded run's DCP shards put together.
        weights = (
            load_file(str(checkpoint / EMA_FILE))
            if ema and has_ema(checkpoint)
            else checkpoint_weights(checkpoint)
        )
        load_trainable_state(
            adapter.denoiser, {k: v.to(adapter.device) for k, v in weights.items()}
        )
    adapter.denoiser.eval()
    return adapter
