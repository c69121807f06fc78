"""One training job on N processes (torch.distributed): ranks, shards, reductions, the launcher.

A run with `gpus = N > 1` is N copies of `treegrpo train` started by a launcher, which sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in each copy's environment. Each rank joins
the process group (gloo on the CPU, nccl on CUDA, one GPU per rank: cuda:LOCAL_RANK), rolls out
and scores its own block of the epoch's prompts, and the gradients are summed across ranks so
that every optimizer step equals the one-process step on the whole batch (see `Trainer.update`).

    command = launch_command(["train", "--preset", "tiny-treegrpo", "--out", "run"], 2, cpu=True)
    subprocess.run(command, check=True)

A job on several machines (`nodes = M`) runs one torchrun agent per machine; the agents meet at
a c10d rendezvous (`Rendezvous`: node 0's host:port and an id per attempt) and torchrun assigns
the ranks, so ranks are global over the M x gpus processes and LOCAL_RANK counts per machine:

    launch_command(argv, 8, cpu=False, rendezvous=Rendezvous(2, "10.0.0.5:29400", "job-7-a1"))

Only this module and the CLI read the launcher's environment; the trainer asks torch.distributed
(`current_ranks`). Every collective here is a no-op in a one-process run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Ranks:
    """Where this process sits in the job: global rank of `world`, and rank on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that prints and writes (metrics, artifacts, checkpoints, logs)."""
        return self.rank == 0


def under_launcher(env: Mapping[str, str]) -> bool:
    """Whether a launcher (torchrun, `accelerate launch`) started this process."""
    return "WORLD_SIZE" in env and "RANK" in env


def ranks_from_env(env: Mapping[str, str]) -> Ranks:
    """The launcher's RANK / WORLD_SIZE / LOCAL_RANK; one process when they are absent."""
    if not under_launcher(env):
        return Ranks()
    ranks = Ranks(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
    if not 0 <= ranks.rank < ranks.world:
        raise ValueError(f"RANK={ranks.rank} is outside WORLD_SIZE={ranks.world}")
    return ranks


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """The device of this rank: cuda:LOCAL_RANK in a multi-GPU job (made current), else `device`."""
    if device.type == "cuda" and ranks.world > 1:
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    return device


def init_process_group(ranks: Ranks, device: torch.device) -> None:
    """Join the group the launcher set up (env:// rendezvous): nccl on CUDA, gloo on the CPU.

    Nothing to do for one process or when the group already exists.
    """
    if ranks.world > 1 and not dist.is_initialized():
        cuda = device.type == "cuda"
        dist.init_process_group(
            "nccl" if cuda else "gloo",
            init_method="env://",
            rank=ranks.rank,
            world_size=ranks.world,
            device_id=device if cuda else None,
        )


def current_ranks() -> Ranks:
    """This process's place in the initialised process group; one process if there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return Ranks()
    rank, world = dist.get_rank(), dist.get_world_size()
    # The launcher's LOCAL_RANK: the rank equals it only on one machine.
    local = dist.get_node_local_rank(fallback_rank=rank)
    return Ranks(rank, world, local)


# ---------------------------------------------------------------------------------------------
# Shards


def shard_range(count: int, rank: int, world: int) -> range:
    """Rank `rank`'s block of `count` items: equal, contiguous, in rank order."""
    if count % world:
        raise ValueError(f"{count} items do not split evenly over {world} ranks")
    size = count // world
    return range(rank * size, (rank + 1) * size)


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Rank `rank`'s block of `items` (see `shard_range`); the blocks concatenate to `items`."""
    return [items[i] for i in shard_range(len(items), rank, world)]


# ---------------------------------------------------------------------------------------------
# Collectives. Each is the identity without a process group of more than one rank.


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device() -> torch.device:
    """nccl moves CUDA tensors only; gloo moves CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Tensor) -> Tensor:
    """Elementwise sum over ranks (a new tensor on `values`' device)."""
    if not _active():
        return values.clone()
    buffer = values.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.to(values.device)


def sum_over_ranks(value: float) -> float:
    """A metric or count summed over ranks (float64 on the wire: exact for counts < 2^53)."""
    return float(all_reduce_sum(torch.tensor([value], dtype=torch.float64))[0])


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on any: a stop request stops all ranks together."""
    return sum_over_ranks(1.0 if flag else 0.0) > 0


def all_gather_cat(values: Tensor) -> Tensor:
    """Every rank's `values` concatenated along dim 0 in rank order (first dims may differ)."""
    if not _active():
        return values
    device, world = _comm_device(), dist.get_world_size()
    local = values.detach().to(device)
    size = torch.tensor([local.shape[0]], device=device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(n) for n in sizes]
    padded = torch.zeros((max(counts), *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)]).to(values.device)


def all_reduce_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Sum `.grad` over ranks in place, in one flat buffer (one collective per optimizer step).

    A parameter that no rank gave a gradient keeps `grad = None`, as in one process (AdamW then
    leaves it alone); one that only some ranks reached gets the sum, zeros standing in for the
    others. Sum, not mean: each rank's loss is already divided by the whole batch's size.
    """
    if not _active():
        return
    params = list(parameters)
    device = _comm_device()
    flat = [
        (p.grad if p.grad is not None else torch.zeros_like(p)).detach().to(device).flatten()
        for p in params
    ]
    reached = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
    buffer = torch.cat([*flat, reached.to(device)])
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        size = p.numel()
        p.grad = buffer[offset : offset + size].view_as(p).to(p.device, p.dtype)
        offset += size
    for p, count in zip(params, buffer[offset:].tolist(), strict=True):
        if count == 0:
            p.grad = None


def gather_to_main(item: T) -> list[T]:
    """Every rank's (picklable, CPU-side) `item` on rank 0, in rank order; [] on the others."""
    if not _active():
        return [item]
    out: list[T] | None = [item] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(item, out, dst=0)
    return out if out is not None else []


def barrier() -> None:
    if _active():
        dist.barrier()


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# The launcher


@dataclass(frozen=True)
class Rendezvous:
    """Where the torchrun agents of a multi-machine job meet (c10d): `nodes` machines, node 0's
    `endpoint` host:port, a `run_id` new at every attempt (a restarted job never meets the
    agents of a dead one). `host` says whether this machine is node 0 and serves the store
    (None: torchrun decides by matching its host name against the endpoint's); `local_addr` is
    the address the other machines reach this one at."""

    nodes: int
    endpoint: str
    run_id: str
    host: bool | None = None
    local_addr: str | None = None
    join_timeout: float = 600.0

    def arguments(self) -> list[str]:
        """torchrun's rendezvous options; `--max-restarts 0`: a node that fails ends the attempt
        everywhere, and the job's owner (the studio's lease, or the site's scheduler) starts
        the next one from the last checkpoint."""
        conf = f"join_timeout={self.join_timeout:g}"
        if self.host is not None:
            conf += f",is_host={int(self.host)}"
        local = ["--local-addr", self.local_addr] if self.local_addr else []
        return [
            "--nnodes",
            str(self.nodes),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            self.endpoint,
            "--rdzv-id",
            self.run_id,
            "--rdzv-conf",
            conf,
            "--max-restarts",
            "0",
            *local,
        ]


def launch_command(
    argv: Sequence[str], num_processes: int, cpu: bool, rendezvous: Rendezvous | None = None
) -> list[str]:
    """The command line that runs `treegrpo <argv>` on `num_processes` ranks of this machine,
    alone or (with `rendezvous`) as one machine of a multi-machine job.

    GPU: `accelerate launch --multi_gpu` (torchrun underneath); `--main_process_port 0` picks a
    free port, so several jobs can share a host. The explicit settings keep a user's accelerate
    config file from changing the job (no mixed precision or dynamo behind the trainer's back).

    CPU: accelerate 1.15 cannot start N CPU processes without MPI: `accelerate launch --cpu
    --num_processes 2` runs ONE process (its multi-CPU path is `mpirun` with a hostfile, for
    Intel oneCCL), and `--multi_cpu` is no longer a flag. So the CPU case calls the launcher that
    `accelerate launch --multi_gpu` itself wraps, torch.distributed.run, directly; `--standalone`
    picks a free port on 127.0.0.1.

    Several machines: torch.distributed.run directly on CPU and GPU alike, since accelerate's
    multi-machine mode is a static rendezvous (a fixed main_process_ip and machine_rank typed
    on every machine), and c10d needs neither.
    """
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    if rendezvous is not None:
        launcher = [*torchrun, *rendezvous.arguments(), "--nproc-per-node", str(num_processes)]
    elif cpu:
        launcher = [*torchrun, "--standalone", "--nnodes", "1", "--nproc_per_node"]
        launcher.append(str(num_processes))
    else:
        # accelerate refuses --multi_gpu for one process; without it, it starts that one plainly.
        multi = ["--multi_gpu"] if num_processes > 1 else []
        launcher = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            *multi,
            "--num_processes",
            str(num_processes),
            "--num_machines",
            "1",
            "--main_process_port",
            "0",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
        ]
    return [*launcher, "-m", "treegrpo.cli", *argv]
