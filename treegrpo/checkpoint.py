"""Checkpoints that resume exactly: weights, optimizer, RNG states, progress and config.

Layout: ROOT/epoch-000004/{model.safetensors, optimizer.pt, rng.pt, state.json}, plus lora/ (the
diffusers LoRA export, treegrpo.export) in a LoRA run's. A checkpoint is
written to a temporary folder and renamed into place, so a crash never leaves a half checkpoint
that `latest_checkpoint` would pick.

A sharded run (`train.sharding: fsdp`, treegrpo/sharding.py) writes its weights and optimizer
with torch.distributed.checkpoint (DCP) instead: dcp/ holds one `__R_0.distcp` file per rank
and the `.metadata` that maps every tensor's pieces, in place of model.safetensors and
optimizer.pt. Tensors are keyed by parameter name (`model.<name>`, `optimizer.state.<name>...`),
not by rank, so DCP reshards on load: a checkpoint of 2 ranks resumes on 1 or 4. The same
rename makes it count only once every shard and the metadata are written. `TrainState` keeps the
run's gradient layout (its shares, treegrpo/shares.py), with which one process resumes a 2-rank
run bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

PREFIX = "epoch-"
DCP_DIR = "dcp"  # a sharded checkpoint's weights and optimizer (torch.distributed.checkpoint)
MODEL_KEY, OPTIMIZER_KEY = "model", "optimizer"


@dataclass
class TrainState:
    """Progress that is not in the weights or the optimizer."""

    epoch: int = 0  # epochs completed
    images_seen: int = 0
    model_evals: int = 0
    wall_clock: float = 0.0  # seconds of training, summed over resumes
    # The trainer process's CPU seconds inside epochs (all its threads), summed over resumes:
    # the run's own clock, which other work on a shared machine does not stretch.
    cpu_clock: float = 0.0
    # The last gallery's held-out rewards (eval/<name>_mean) and its epoch, for model cards.
    held_out: dict[str, float] = field(default_factory=dict)
    held_out_epoch: int = -1
    # The over-optimisation watch's last (reward gap, gallery diversity) (treegrpo/overopt.py).
    watch: list[float] | None = None
    # The run's gradient layout (treegrpo/shares.py): the ranks each optimizer step sums, and
    # FSDP's shard group (0: replicated). One process resuming a run of 2 ranks sums as they did.
    shares: int = 1
    shards: int = 0


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


def save_sharded_checkpoint(
    root: Path,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    config: dict[str, Any],
    is_main: bool,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """`save_checkpoint` for a sharded module; every rank calls it. Each rank writes its own
    shards into dcp/; rank 0 writes the rest and renames the folder into place once `dcp.save`
    has returned, which is after every rank's shards and the metadata are on disk (DCP's
    coordinator writes `.metadata` from all ranks' write results, then releases them).

    Across machines (HSDP, `nodes` > 1) only rank 0 publishes the folder, from its own disk.
    The replica groups hold the same shards, and the first machine's ranks are the lowest, so
    saving each piece on the lowest rank that holds it puts the whole checkpoint on rank 0's
    machine; DCP's default spreads duplicates over every rank, other machines included. The
    other machines' leftover folder (an empty file per rank) is removed."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner

    from treegrpo.distributed import barrier

    target = checkpoint_dir(root, state.epoch)
    tmp = root / f".tmp-{target.name}-sharded"  # one name for every rank (no pid)
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    with _one_process_is_intended():
        dcp.save(
            _sharded_state(module, optimizer),
            checkpoint_id=str(tmp / DCP_DIR),
            planner=DefaultSavePlanner(dedup_save_to_lowest_rank=True),
            no_dist=not _in_group(),  # one process: a sharded run resumed there
        )
    if is_main:
        torch.save({"torch": torch.get_rng_state(), "python": random.getstate()}, tmp / "rng.pt")
        (tmp / "state.json").write_text(
            json.dumps({"state": asdict(state), "config": config}, indent=1)
        )
        if extra is not None:
            extra(tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    barrier()  # no rank goes on (and may be killed) before the checkpoint exists
    if not is_main:
        shutil.rmtree(tmp, ignore_errors=True)  # still there only on another machine's disk
    return target


def _sharded_state(
    module: nn.Module, optimizer: torch.optim.Optimizer | None
) -> dict[str, dict[str, Any]]:
    """The trainable weights (and the optimizer's state) by parameter name, as DCP stores them:
    this rank's shards of a sharded module, whole tensors of a plain one. Frozen weights (a LoRA
    run's base) come from the model, as in `trainable_state`."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_state_dict,
    )

    options = StateDictOptions(ignore_frozen_params=True)
    trainable = {name for name, param in module.named_parameters() if param.requires_grad}
    if optimizer is None:
        weights, optim = get_model_state_dict(module, options=options), None
    else:
        weights, optim = get_state_dict(module, optimizer, options=options)
    # Buffers (SD3's pos_embed) are not trained: they come from the model, as frozen weights do.
    state = {MODEL_KEY: {name: t for name, t in weights.items() if name in trainable}}
    return state if optim is None else {**state, OPTIMIZER_KEY: optim}


def _load_sharded(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Load dcp/ into the module (sharded or not) and the optimizer, resharding as needed."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    from treegrpo.optim import MasterWeightAdamW

    if isinstance(optimizer, MasterWeightAdamW):
        raise ValueError(
            f"{path} is a sharded checkpoint (float32 weight shards); resume it with "
            "train.weights_dtype: float32"
        )
    state = _sharded_state(module, optimizer)
    with _one_process_is_intended():
        dcp.load(state, checkpoint_id=str(path / DCP_DIR), no_dist=not _in_group())
    set_state_dict(
        module,
        optimizer if optimizer is not None else [],
        model_state_dict=state[MODEL_KEY],
        optim_state_dict=state.get(OPTIMIZER_KEY, {}),
        options=StateDictOptions(ignore_frozen_params=True, strict=False),
    )


def checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's trainable weights as whole CPU tensors, by parameter name, without a model
    or a process group: model.safetensors, or a sharded checkpoint's pieces put together (only
    the weights are read, not the optimizer's state)."""
    if (path / "model.safetensors").is_file():
        return load_file(str(path / "model.safetensors"))
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = dcp.FileSystemReader(str(path / DCP_DIR))
    prefix = f"{MODEL_KEY}."
    weights = {
        name[len(prefix) :]: torch.empty(meta.size, dtype=meta.properties.dtype)
        for name, meta in reader.read_metadata().state_dict_metadata.items()
        if name.startswith(prefix) and isinstance(meta, TensorStorageMetadata)
    }
    # no_dist: one process reads every rank's files, even inside a running process group.
    with _one_process_is_intended():
        dcp.load({MODEL_KEY: weights}, storage_reader=reader, no_dist=True)
    return weights


def is_checkpoint(path: Path) -> bool:
    """A finished checkpoint folder of either layout."""
    weights = (path / "model.safetensors").is_file() or (path / DCP_DIR / ".metadata").is_file()
    return (path / "state.json").is_file() and weights


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
    """Restore weights (and optimizer and RNG) in place; returns the progress and config.
    Either layout loads into a sharded or a plain module."""
    if (path / DCP_DIR).is_dir():
        _load_sharded(path, module, optimizer)
    else:
        _load_plain(path, module, optimizer)
    rng = torch.load(path / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    document = json.loads((path / "state.json").read_text())
    return TrainState(**document["state"]), document["config"]


def _load_plain(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    if any(_is_sharded(p) for p in module.parameters()):
        # Cannot happen through the CLI (a run keeps its train.sharding on resume, and a run
        # with fsdp writes DCP checkpoints even on one process); say so rather than guess.
        raise ValueError(
            f"{path} is a replicated run's checkpoint and this run is sharded (train.sharding: "
            "fsdp); resume it with the settings it was made with"
        )
    device = next(module.parameters()).device
    load_trainable_state(module, load_file(str(path / "model.safetensors"), device=str(device)))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device))


@contextlib.contextmanager
def _one_process_is_intended() -> Iterator[None]:
    """DCP warns on every call without a process group ("assuming the intent is to save in a
    single process"); here that is the intent (one process, or reading all shards on one)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _in_group() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _is_sharded(param: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(param, DTensor)
