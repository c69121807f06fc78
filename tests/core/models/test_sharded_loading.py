"""Loading a sharded run (`train.sharding: fsdp`, 2 gloo ranks): only rank 0 reads the
denoiser's weights; rank 1 builds it on the meta device, and rank 0's weights are broadcast into
its shards (`sharding.fill_shards`). Every rank's shards, LoRA adapters and KL reference
included, come out bit-equal to those of the former loading, where each rank loaded a full copy
and sharded it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from tiny_diffusers import run_config, save_sd3

from treegrpo.config import RunConfig, resolve_config
from treegrpo.distributed import launch_command

LAUNCH_TIMEOUT = 150  # a rank stuck in a collective fails the test instead of hanging it

RANKS_SCRIPT = """
import json, os, sys
import torch
from torch.distributed.tensor import DTensor
from treegrpo.config import RunConfig
from treegrpo.distributed import current_ranks, destroy_process_group, init_process_group
from treegrpo.distributed import ranks_from_env
from treegrpo.models.registry import load_model_for
from treegrpo.rewards.registry import load_run_rewards
from treegrpo.secrets import environment_resolver
from treegrpo.seeds import LORA_INIT_STREAM, stream_seed
from treegrpo.sharding import loads_empty_denoiser, shard_denoiser
from treegrpo.trainer import Trainer

ranks = ranks_from_env(os.environ)
init_process_group(ranks, torch.device("cpu"))
config = RunConfig.from_dict(json.loads(open(sys.argv[1]).read()))
cpu = torch.device("cpu")
rewards = load_run_rewards(config, cpu, environment_resolver(os.environ))

empty = loads_empty_denoiser(config.train, current_ranks())
assert empty == (ranks.rank > 0)
lean = load_model_for(config, "cpu", empty_denoiser=empty)
params = list(lean.denoiser.parameters())
assert [p.is_meta for p in params] == [ranks.rank > 0] * len(params), "rank 1 read weights"
trainer = Trainer(config, lean, rewards)

# The former loading: a full copy on every rank, LoRA added from the run's seed, then sharded.
former = load_model_for(config, "cpu")
if config.train.lora_rank:
    former.enable_lora(config.train.lora_rank, seed=stream_seed(config.seed, 0, LORA_INIT_STREAM))
shard_denoiser(former.denoiser, cpu, None)


def local(module):
    return {k: v.to_local() if isinstance(v, DTensor) else v for k, v in module.state_dict().items()}


expected = local(former.denoiser)
modules = [lean.denoiser] + ([trainer.reference] if config.train.kl_beta else [])
for module in modules:
    got = local(module)
    assert got.keys() == expected.keys() and expected
    for name, value in got.items():
        assert not value.is_meta and torch.equal(value, expected[name]), name
trained = sum(p.numel() for p in trainer.parameters)
destroy_process_group()
os.write(1, f"ok {ranks.rank} {len(modules)} {len(expected)} {trained}\\n".encode())
"""


def _launch_ranks(config: RunConfig, tmp_path: Path) -> list[list[str]]:
    script, config_file = tmp_path / "ranks.py", tmp_path / "config.json"
    script.write_text(RANKS_SCRIPT)
    config_file.write_text(json.dumps(config.to_dict()))
    command = launch_command(["unused"], 2, cpu=True)
    launcher = command[: command.index("-m", 3)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [*launcher, str(script), str(config_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = sorted(line.split() for line in result.stdout.splitlines() if line.startswith("ok"))
    assert [line[1] for line in lines] == ["0", "1"]
    return lines


@pytest.mark.slow
def test_rank_1_loads_nothing_and_gets_rank_0s_full_fine_tune_and_kl_reference(
    tmp_path: Path,
) -> None:
    config = resolve_config(
        "tiny-dancegrpo",
        assignments=["device=cpu", "train.sharding=fsdp", "train.kl_beta=0.05"],
    )
    lines = _launch_ranks(config, tmp_path)
    assert all(line[2] == "2" for line in lines)  # the policy and the reference were compared


@pytest.mark.slow
def test_rank_1_loads_nothing_and_gets_rank_0s_sd3_with_the_same_lora(tmp_path: Path) -> None:
    """A diffusers folder: rank 1 builds the transformer from its config.json alone; its
    buffers (SD3's position table) arrive too, and the LoRA adapters equal those the run's
    seed draws on a full copy."""
    folder = tmp_path / "tiny-sd3"
    save_sd3(folder, with_t5=False, seed=4)
    config = run_config(str(folder), **{"train.sharding": "fsdp", "train.lora_rank": 2})
    lines = _launch_ranks(config, tmp_path)
    trained = {line[4] for line in lines}
    assert len(trained) == 1 and int(trained.pop()) > 0


@pytest.mark.parametrize("name", ["tiny-random", "tiny-random-ddim", "digits", "digits-ddim"])
def test_every_built_in_model_loads_an_empty_denoiser(name: str) -> None:
    """What ranks > 0 of a sharded run load: the architecture, no storage, nothing read; the
    rest of the adapter (text encoder, schedule) is whole."""
    from treegrpo.models.registry import load_model

    full = load_model(name, "cpu")
    empty = load_model(name, "cpu", empty_denoiser=True)
    shapes = [(n, p.shape, p.dtype) for n, p in full.denoiser.named_parameters()]
    assert [(n, p.shape, p.dtype) for n, p in empty.denoiser.named_parameters()] == shapes
    assert all(p.is_meta for p in empty.denoiser.parameters())
    assert not any(p.is_meta for p in full.denoiser.parameters())
    prompts = ["a cat", "a dog"]
    for a, b in zip(
        full.encode_prompts(prompts).tensors.values(),
        empty.encode_prompts(prompts).tensors.values(),
        strict=True,
    ):
        assert torch.equal(a, b)
