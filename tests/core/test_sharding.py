"""`train.sharding: fsdp` on 2 gloo ranks (treegrpo/sharding.py, the DCP checkpoints of
treegrpo/checkpoint.py): the sharded run trains what the replicated run trains (gradient norms,
not only weights: a divide factor left on FSDP's mean halves the norm, and clipping can hide it
in the weights), ranks with fewer micro-batches pad instead of hanging, and a checkpoint written
by 2 ranks resumes on 1 and on 2.

Measured on a 2-core CPU (tiny-random, the configs below): per-epoch gradient norms agree to
~2e-7 relative, weights to ~1e-7 (two ranks sum a minibatch in another order). A checkpoint of
2 ranks resumed on one process is bit-equal to the uninterrupted run: that process sums the two
ranks' shares as FSDP did (treegrpo/shares.py); without it, weights were 1.5e-8 apart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from treegrpo.checkpoint import DCP_DIR, checkpoint_weights, latest_checkpoint
from treegrpo.cli import main
from treegrpo.config import ConfigError, resolve_config
from treegrpo.distributed import launch_command
from treegrpo.sharding import shard_units

# A rank that waits forever in a collective fails the test here instead of hanging it.
LAUNCH_TIMEOUT = 150
LR = resolve_config("tiny-treegrpo").train.effective_lr
CLIP = 0.05  # below tiny-treegrpo's gradient norms (~0.1): every step is clipped
# 8 trees of 6 trained edges on 2 ranks, 2 minibatches of 24 edges, micro-batches of 2: the
# ranks' shares of a minibatch are random, so their micro-batch counts differ.
SETTINGS = ["--preset", "tiny-treegrpo", "--quiet", "--set", "device=cpu"]
SETTINGS += ["--set", "prompts_per_epoch=8", "--set", "train.minibatches=2"]
SETTINGS += ["--set", "train.micro_batch=2", "--set", "train.sharding=fsdp"]
SETTINGS += ["--set", "log_tree_every=2"]


def _launch_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", HF_HUB_OFFLINE="1")
    return env


def _run(command: list[str], **env: str) -> str:
    """Run a launch command to its end (a hung rank fails at LAUNCH_TIMEOUT); its stdout."""
    result = subprocess.run(
        command,
        env={**_launch_env(), **env},
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _launch(argv: list[str], ranks: int = 2) -> str:
    return _run(launch_command(argv, ranks, cpu=True))


def _launch_script(path: Path, text: str, ranks: int, **env: str) -> str:
    """Run the Python script `text` (written to `path`) on `ranks` torchrun ranks; its stdout."""
    path.write_text(text)
    command = launch_command(["unused"], ranks, cpu=True)
    return _run([*command[: command.index("-m", 3)], str(path)], **env)


def _metrics(run: Path) -> list[dict[str, float]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["metrics"] for line in lines]


def _weights(run: Path, epoch: int | None = None) -> dict[str, torch.Tensor]:
    root = run / "checkpoints"
    checkpoint = root / f"epoch-{epoch:06d}" if epoch else latest_checkpoint(root)
    assert checkpoint is not None
    return checkpoint_weights(checkpoint)


def _assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Within float rounding; AdamW may turn a rounding-level difference of a gradient below
    its eps into up to lr * |dg| / eps (see test_distributed._assert_same_weights)."""
    assert a.keys() == b.keys() and a
    diff = torch.cat([(a[name] - b[name]).abs().flatten() for name in a])
    assert float(diff.max()) <= 0.1 * LR
    assert float(diff.median()) < 1e-7


def _assert_same_training(one: Path, two: Path) -> None:
    a, b = _metrics(one), _metrics(two)
    assert len(a) == len(b)
    for epoch, (ma, mb) in enumerate(zip(a, b, strict=True), start=1):
        for name in ("grad_norm", "loss", "reward_mean", "ratio_mean"):
            assert mb[name] == pytest.approx(ma[name], rel=1e-5, abs=1e-7), (epoch, name)


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_sharding_is_a_checked_setting() -> None:
    assert resolve_config("tiny-treegrpo").train.sharding == "none"
    assert resolve_config("tiny-treegrpo", assignments=["train.sharding=fsdp"]).train.sharding
    with pytest.raises(ConfigError) as error:
        resolve_config("tiny-treegrpo", assignments=["train.sharding=zero3"])
    assert error.value.field == "train.sharding"
    with pytest.raises(ConfigError) as error:
        resolve_config(
            "tiny-treegrpo",
            assignments=["train.sharding=fsdp", "dtype=bfloat16", "train.weights_dtype=bfloat16"],
        )
    assert error.value.field == "train.sharding" and "master weights" in error.value.reason


def test_units_are_the_blocks_of_the_top_level_block_lists() -> None:
    from treegrpo.models.tiny import TinyDenoiser

    denoiser = TinyDenoiser(blocks=3)
    assert shard_units(denoiser) == list(denoiser.blocks)


@pytest.mark.slow
def test_two_sharded_ranks_train_like_one_process_and_pad_uneven_micro_batches(
    tmp_path: Path, one_thread: None
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", *SETTINGS, "--set", "epochs=2", "--out", str(one)]) == 0
    stdout = _launch(
        ["train", *SETTINGS, "--set", "gpus=2", "--set", "epochs=2", "--out", str(two)]
    )
    assert stdout.count("completed at epoch 2/2") == 1
    _assert_same_training(one, two)
    _assert_close_weights(_weights(one), _weights(two))
    # The ranks did run unequal micro-batch counts (and padded instead of hanging).
    assert sum(m["sharding/padding_forwards"] for m in _metrics(two)) > 0
    # Each rank wrote its half of the weights and moments, not a replica.
    shards = sorted((latest_checkpoint(two / "checkpoints") / DCP_DIR).glob("*.distcp"))  # type: ignore[operator]
    sizes = [p.stat().st_size for p in shards]
    assert len(sizes) == 2 and min(sizes) > 0.3 * sum(sizes)
    # The tree explorer's and evaluation's policy loads the shards put together.
    from treegrpo.policy import load_policy

    checkpoint = latest_checkpoint(two / "checkpoints")
    assert checkpoint is not None
    config = resolve_config("tiny-treegrpo", assignments=["device=cpu"])
    policy = load_policy(config, checkpoint).denoiser
    saved = checkpoint_weights(checkpoint)
    assert all(torch.equal(p.detach(), saved[name]) for name, p in policy.named_parameters())
    # Rank 0 wrote every rank's trees, as one process did.
    trees = [sorted(p.name for p in (run / "artifacts" / "trees").iterdir()) for run in (one, two)]
    assert trees[0] == trees[1] and len(trees[1]) == 2 * 8  # the first and the final epoch
    # The galleries ran on both ranks (a sharded forward is collective) and match.
    assert _metrics(two)[-1]["eval/reward_mean"] == pytest.approx(
        _metrics(one)[-1]["eval/reward_mean"], rel=1e-5
    )


def _checkpoint_state(checkpoint: Path, out: Path) -> dict[str, Any]:
    """A DCP checkpoint's weights and optimizer state put together by torch's own consolidation."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(str(checkpoint / DCP_DIR), str(out))
    whole: dict[str, Any] = torch.load(out, weights_only=False)
    return whole


def _assert_bit_equal(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_bit_equal(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


@pytest.mark.slow
def test_a_checkpoint_of_two_ranks_resumes_on_two_and_on_one_bit_for_bit(
    tmp_path: Path, one_thread: None
) -> None:
    """Uninterrupted: 3 epochs on 2 ranks, the gradient clipped (max_grad_norm below the
    norms, so the clip's norm reaches the weights). Its epoch-2 checkpoint resumed on 2 ranks
    gives the same epoch 3 bit for bit; resumed on 1 process (DCP reshards), the loaded weights
    and AdamW state are bit-equal to what the 2 ranks saved, and epoch 3 too: metrics, weights
    and AdamW moments (one process trains the two ranks' shares and sums them in FSDP's order,
    treegrpo/shares.py)."""
    straight = tmp_path / "straight"
    clipped = ["--set", f"train.max_grad_norm={CLIP}"]
    run = ["train", *SETTINGS, *clipped, "--set", "gpus=2", "--set", "epochs=3"]
    _launch([*run, "--out", str(straight)])
    assert all(m["grad_norm"] > CLIP for m in _metrics(straight))  # the clip acts

    def cut_at_epoch_2(name: str) -> Path:
        run = tmp_path / name
        shutil.copytree(straight, run)
        shutil.rmtree(run / "checkpoints" / "epoch-000003")
        return run

    again = cut_at_epoch_2("again")
    _launch(["train", "--resume", str(again), "--set", "epochs=3", "--quiet"])
    a, b = _weights(straight, 3), _weights(again, 3)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(again)[-1]["grad_norm"] == _metrics(straight)[-1]["grad_norm"]

    # The loaded state on one process, against torch's own consolidation of the checkpoint.
    from treegrpo.models.registry import load_model_for
    from treegrpo.rewards.registry import load_run_rewards
    from treegrpo.trainer import Trainer

    config = resolve_config(overrides=json.loads((straight / "config.json").read_text()))
    config = resolve_config(overrides=config.to_dict(), assignments=["gpus=1"])
    trainer = Trainer(config, load_model_for(config), load_run_rewards(config))
    checkpoint = straight / "checkpoints" / "epoch-000002"
    trainer.resume(checkpoint)
    whole = _checkpoint_state(checkpoint, tmp_path / "whole.pt")
    for name, param in trainer.adapter.denoiser.named_parameters():
        assert torch.equal(param.detach(), whole["model"][name]), name
        moments = trainer.optimizer.state[param]
        saved = whole["optimizer"]["state"][name]
        assert torch.equal(moments["exp_avg"], saved["exp_avg"]), name
        assert torch.equal(moments["exp_avg_sq"], saved["exp_avg_sq"]), name
        assert float(moments["step"]) == float(saved["step"]) == 4.0  # 2 epochs x 2 minibatches
    assert trainer.state.epoch == 2
    # It keeps the layout of the run it resumes: 2 shares, FSDP's shard group of 2.
    assert (trainer.layout.shares, trainer.layout.shards) == (2, 2)

    on_one = cut_at_epoch_2("on_one")
    resume = ["train", "--resume", str(on_one), "--set", "epochs=3", "--set", "gpus=1", "--quiet"]
    assert main(resume) == 0
    # Every metric bit for bit, but the timings and the padding (one process needs none).
    skip = ("time/", "throughput/", "wall_clock", "cpu_clock", "sharding/")
    assert [{k: v for k, v in m.items() if not k.startswith(skip)} for m in _metrics(on_one)] == [
        {k: v for k, v in m.items() if not k.startswith(skip)} for m in _metrics(straight)
    ]
    final = [straight, on_one]
    states = [
        _checkpoint_state(run / "checkpoints" / "epoch-000003", tmp_path / f"{run.name}.pt")
        for run in final
    ]
    _assert_bit_equal(states[0]["model"], states[1]["model"])
    _assert_bit_equal(states[0]["optimizer"]["state"], states[1]["optimizer"]["state"])
    # One process writes the same layout: the run's checkpoints stay DCP, and remember the shares.
    saved = json.loads((on_one / "checkpoints" / "epoch-000003" / "state.json").read_text())
    assert (saved["state"]["shares"], saved["state"]["shards"]) == (2, 2)


@pytest.mark.slow
def test_a_sharded_flat_baseline_with_a_sharded_kl_reference_trains_like_one_process(
    tmp_path: Path, one_thread: None
) -> None:
    """DanceGRPO with the KL term: the reference is sharded too, so its forwards are collective
    and the padding runs them as well."""
    settings = ["--preset", "tiny-dancegrpo", "--quiet", "--set", "device=cpu"]
    settings += ["--set", "prompts_per_epoch=4", "--set", "epochs=2", "--set", "train.kl_beta=0.05"]
    settings += ["--set", "train.micro_batch=2", "--set", "train.sharding=fsdp"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", *settings, "--out", str(one)]) == 0
    _launch(["train", *settings, "--set", "gpus=2", "--out", str(two)])
    for a, b in zip(_metrics(one), _metrics(two), strict=True):
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
        assert b["kl"] == pytest.approx(a["kl"], rel=1e-5) and b["kl"] > 0
    assert sum(m["sharding/padding_forwards"] for m in _metrics(two)) > 0
    _assert_close_weights(_weights(one), _weights(two))


REDUCTION_SCRIPT = """
import copy, os
import torch
from treegrpo.distributed import destroy_process_group, init_process_group, ranks_from_env
from treegrpo.models.tiny import TinyDenoiser
from treegrpo.sharding import full_norm, shard_denoiser
from treegrpo.shares import sharded_total_norm

ranks = ranks_from_env(os.environ)
init_process_group(ranks, torch.device("cpu"))
torch.manual_seed(0)
whole = TinyDenoiser(blocks=2)
model = copy.deepcopy(whole)
shard_denoiser(model, torch.device("cpu"), None, replicas=int(os.environ["REPLICAS"]))


def loss(module, rank):
    # Each rank's share of the batch, divided by the whole batch's size (as ppo_update does).
    g = torch.Generator().manual_seed(rank)
    x, c = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 64, generator=g)
    return module(x, torch.rand(2, generator=g) * 1000, c).pow(2).sum() / (2 * ranks.world)


loss(model, ranks.rank).backward()
for rank in range(ranks.world):  # every rank's share in one process
    loss(whole, rank).backward()
total = torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1e9)
norm = full_norm(total)
expected = float(torch.nn.utils.clip_grad_norm_(list(whole.parameters()), 1e9))
assert abs(norm - expected) <= 1e-5 * expected, (norm, expected)
# One process's emulation of this norm (treegrpo/shares.py), from the same gradients: bit-equal.
shards = ranks.world // int(os.environ["REPLICAS"])
grads = [p.grad.full_tensor() for p in model.parameters()]
assert torch.equal(sharded_total_norm(grads, shards), total.full_tensor()), shards
for (name, p), q in zip(model.named_parameters(), whole.parameters(), strict=True):
    torch.testing.assert_close(p.grad.full_tensor(), q.grad, rtol=1e-5, atol=1e-7, msg=name)
destroy_process_group()
os.write(1, f"ok {ranks.rank} {norm:.6f}\\n".encode())
"""


@pytest.mark.slow
@pytest.mark.parametrize(("world", "replicas"), [(2, 1), (4, 2)])
def test_sharded_gradients_are_the_sum_over_ranks_flat_and_hybrid(
    tmp_path: Path, world: int, replicas: int
) -> None:
    """The gradient of every sharded unit is the sum of the ranks' gradients, on one mesh
    dimension and on HSDP's two (2 replica groups of 2 shards: two machines of 2 GPUs)."""
    out = _launch_script(tmp_path / "reduction.py", REDUCTION_SCRIPT, world, REPLICAS=str(replicas))
    assert sorted(line.split()[1] for line in out.splitlines() if line.startswith("ok")) == [
        str(rank) for rank in range(world)
    ]


MACHINES_SCRIPT = """
import os
from pathlib import Path
import torch
from treegrpo.checkpoint import TrainState, save_sharded_checkpoint
from treegrpo.distributed import destroy_process_group, init_process_group, ranks_from_env
from treegrpo.models.tiny import TinyDenoiser
from treegrpo.sharding import shard_denoiser

ranks = ranks_from_env(os.environ)
init_process_group(ranks, torch.device("cpu"))
torch.manual_seed(0)
model = TinyDenoiser(blocks=2)
shard_denoiser(model, torch.device("cpu"), None, replicas=ranks.world)  # a machine per rank
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
g = torch.Generator().manual_seed(0)  # the same batch on both replicas
x, c = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 64, generator=g)
model(x, torch.rand(2, generator=g) * 1000, c).pow(2).sum().backward()
optimizer.step()
whole = {name: p.full_tensor().clone() for name, p in model.named_parameters()}
# Each rank's own disk, as on two machines that share nothing but the network.
root = Path(os.environ["MACHINES"]) / f"machine-{ranks.rank}"
save_sharded_checkpoint(root, model, optimizer, TrainState(epoch=1), {}, is_main=ranks.rank == 0)
if ranks.rank == 0:
    torch.save(whole, Path(os.environ["MACHINES"]) / "whole.pt")
destroy_process_group()
os.write(1, f"ok {ranks.rank}\\\\n".encode())
"""


@pytest.mark.slow
def test_a_sharded_checkpoint_of_two_machines_is_whole_on_the_first(tmp_path: Path) -> None:
    """HSDP across machines (nodes=2): only node 0's rank 0 uploads the checkpoint, from its own
    disk, so that disk must hold every piece. The replicas hold the same shards, and DCP put
    some of them on the other machine unless told to save each on the lowest rank."""
    _launch_script(tmp_path / "machines.py", MACHINES_SCRIPT, 2, MACHINES=str(tmp_path))
    first = latest_checkpoint(tmp_path / "machine-0")
    assert first is not None
    whole = torch.load(tmp_path / "whole.pt")
    restored = checkpoint_weights(first)  # machine 0's files alone
    assert restored.keys() == whole.keys()
    for name, tensor in whole.items():
        assert torch.equal(restored[name], tensor), name
    # The other machine keeps no half-written folder behind.
    assert not any((tmp_path / "machine-1").rglob("*.distcp"))
