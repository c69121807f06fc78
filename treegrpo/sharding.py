"""FSDP2 sharding of the denoiser (`train.sharding: fsdp`): each of N processes holds 1/N of the
trained weights, their gradients and the AdamW moments.

    if sharding_active(config.train, ranks):
        shard_denoiser(adapter.denoiser, adapter.device, compute_dtype(adapter))

`torch.distributed.fsdp.fully_shard` wraps one unit per block of the denoiser's top-level block
lists (FLUX's `transformer_blocks` and `single_transformer_blocks`, SD3's `transformer_blocks`,
the UNet's `down_blocks`/`up_blocks`, the tiny model's `blocks`), then the root for the rest,
as DanceGRPO and verl wrap one FSDP unit per transformer block. The parameters stay float32 and
sharded: they are the master weights, and the optimizer steps on the shards. A forward
all-gathers one unit at a time, in `MixedPrecisionPolicy.param_dtype` (bf16 on a GPU run with
dtype bfloat16; float32 on the CPU, so the gloo tests compare like with like); gradients are
reduce-scattered in float32 inside `backward`.

The reduction is a SUM, not FSDP's default mean: each rank's loss is already divided by the
whole minibatch's size (`update.ppo_update`), as the replicated path's `all_reduce_gradients`
assumes. `set_gradient_divide_factor` reaches only the parameters of the module it is called on,
not its children's (torch `_fully_shard.py`), so it is set on every sharded unit; a root-only
setting halves a 2-rank gradient norm (measured, docs/BENCHMARKS.md "Sharding").

Loading: only rank 0 reads the denoiser's weights. The other ranks build it on the meta device
(`loads_empty_denoiser`, `registry.load_model(empty_denoiser=True)`), every rank shards, and
`fill_shards` broadcasts rank 0's full state into the shards one tensor at a time, so N ranks
never hold N full float32 copies in host memory.

Every FSDP forward is a collective: every rank must run as many forwards (and backwards) as the
others, or the ones ahead wait forever in an all-gather. `update.ppo_update` pads with
zero-weighted micro-batches; galleries sample on every rank.
"""

from __future__ import annotations

import torch
from torch import nn

from treegrpo.config import TrainConfig
from treegrpo.distributed import Ranks, all_gather_cat
from treegrpo.models.base import ModelAdapter


def sharding_active(train: TrainConfig, ranks: Ranks) -> bool:
    """fsdp with more than one process; one process trains a plain module (the same maths), so
    a sharded run can resume on one process (`checkpoint.load_checkpoint` reshards)."""
    return train.sharding == "fsdp" and ranks.world > 1


def loads_empty_denoiser(train: TrainConfig, ranks: Ranks) -> bool:
    """Whether this rank builds its denoiser on the meta device and leaves the reading of the
    weights to rank 0 (`fill_shards`): every rank of a sharded run but rank 0."""
    return sharding_active(train, ranks) and not ranks.is_main


def compute_dtype(adapter: ModelAdapter) -> torch.dtype | None:
    """The dtype FSDP all-gathers the weights in for compute: the run's autocast dtype on a GPU;
    None (float32) on the CPU, where gloo and the equality tests want full precision."""
    return adapter.autocast_dtype if adapter.device.type == "cuda" else None


def shard_units(module: nn.Module) -> list[nn.Module]:
    """The blocks that become FSDP units of their own: the members of the module's top-level
    block lists. Lists nested deeper (an attention's `to_out`) stay inside their block."""
    return [
        block
        for child in module.children()
        if isinstance(child, nn.ModuleList)
        for block in child
        if any(True for _ in block.parameters())
    ]


def shard_denoiser(
    module: nn.Module, device: torch.device, dtype: torch.dtype | None, replicas: int = 1
) -> None:
    """Shard `module` in place over the ranks of the process group.

    `replicas` > 1 is HSDP: a 2-D mesh (replicas, world / replicas), sharded within each group
    of world / replicas ranks (one machine) and replicated across the groups (machines), so only
    one gradient all-reduce per step crosses the network. Build the optimizer afterwards:
    sharding replaces each parameter by a DTensor parameter. The mesh is explicit: without one,
    a gloo job on a machine with GPUs moves to CUDA (pytorch/pytorch#132471).
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    world = dist.get_world_size()
    if replicas < 1 or world % replicas:
        raise ValueError(f"{world} ranks do not split into {replicas} equal replica groups")
    if replicas == 1:
        mesh = init_device_mesh(device.type, (world,))
    else:
        mesh = init_device_mesh(
            device.type, (replicas, world // replicas), mesh_dim_names=("replicate", "shard")
        )
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    for block in shard_units(module):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(module, mesh=mesh, mp_policy=policy)
    for unit in module.modules():
        if isinstance(unit, FSDPModule):
            # Sum over the shard group and over the replicas alike.
            unit.set_gradient_divide_factor(1.0)
            # SUM on the wire: no PREMUL_SUM, which gloo lacks.
            unit.set_force_sum_reduction_for_comms(True)


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """What `fill_shards` broadcasts: rank 0's full state (parameters and buffers, unsharded),
    taken before sharding; the other ranks' modules are empty and give nothing."""
    import torch.distributed as dist

    if dist.get_rank() != 0:
        return {}
    return dict(module.state_dict(keep_vars=False))


def fill_shards(module: nn.Module, state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Broadcast rank 0's full `state` (`full_state`) into every rank's shards of `module`,
    sharded by `shard_denoiser`, with torch's own `set_model_state_dict(broadcast_from_rank0)`:
    one tensor at a time, so no rank but 0 ever holds the whole model.

    Ranks > 0 hold an empty (meta) module: `to_empty` gives their shards and buffers storage
    first. Buffers outside the state dict (non-persistent ones) are broadcast one by one.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if dist.get_rank() != 0:
        module.to_empty(device=device)
    set_model_state_dict(
        module,
        dict(state),  # a copy: it puts the module's new shards in the dict it is given
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
    )
    persistent = set(module.state_dict().keys())
    for name, buffer in module.named_buffers():
        if name not in persistent:
            dist.broadcast(buffer, src=0)


def full_norm(norm: torch.Tensor) -> float:
    """A gradient norm as a number: `clip_grad_norm_` over sharded gradients returns a DTensor."""
    from torch.distributed.tensor import DTensor

    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)


def max_over_ranks(count: int) -> int:
    """The largest of every rank's `count` (the micro-batches a sharded step must run)."""
    return int(all_gather_cat(torch.tensor([count])).max())
