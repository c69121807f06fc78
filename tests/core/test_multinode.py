"""One job on several machines: the `nodes` setting, the torchrun command each machine runs
(c10d rendezvous), the commands external launchers (SLURM, Kubeflow Trainer) run, and the key
property: two torchrun agents (two "machines" on 127.0.0.1, one rank each) train exactly what
the one-machine 2-process run trains."""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from test_distributed import LAUNCH_TIMEOUT, _launch_env, _metrics, _run, _weights
from torch.distributed.run import get_args_parser

from treegrpo.checkpoint import DCP_DIR, checkpoint_weights, latest_checkpoint
from treegrpo.cli import main
from treegrpo.config import ConfigError, resolve_config
from treegrpo.distributed import Rendezvous, launch_command
from treegrpo.launchers import slurm_script, train_job


def test_nodes_is_validated_and_nodes_x_gpus_must_divide_the_prompts() -> None:
    config = resolve_config(
        "tiny-treegrpo", assignments=["nodes=2", "gpus=2", "prompts_per_epoch=4"]
    )
    assert (config.nodes, config.gpus, config.world_size) == (2, 2, 4)
    assert resolve_config("tiny-treegrpo").world_size == 1
    for value in ("0", "65", "true"):
        with pytest.raises(ConfigError) as error:
            resolve_config("tiny-treegrpo", assignments=[f"nodes={value}"])
        assert error.value.field == "nodes"
    # 4 prompts split over 2 machines, but not over 2 x 3 processes.
    with pytest.raises(ConfigError) as error:
        resolve_config("tiny-treegrpo", assignments=["nodes=2", "gpus=3", "prompts_per_epoch=4"])
    assert error.value.field == "nodes"
    assert "nodes x gpus = 2 x 3" in error.value.reason


def test_a_multi_node_command_is_torchrun_with_c10d_rendezvous() -> None:
    rendezvous = Rendezvous(2, "10.0.0.5:29400", "job-7-a1", host=True, local_addr="10.0.0.5")
    command = launch_command(["train", "--out", "run"], 8, cpu=False, rendezvous=rendezvous)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    args = get_args_parser().parse_args(command[3:])
    assert args.nnodes == "2" and args.nproc_per_node == "8"
    assert (args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id) == (
        "c10d",
        "10.0.0.5:29400",
        "job-7-a1",
    )
    assert args.rdzv_conf == "join_timeout=600,is_host=1"
    assert args.max_restarts == 0  # a failed machine ends the attempt; the studio resumes it
    assert args.local_addr == "10.0.0.5"
    assert args.module and args.training_script == "treegrpo.cli"
    assert args.training_script_args == ["train", "--out", "run"]
    # Another machine of the gang: it does not serve the store.
    joiner = Rendezvous(2, "10.0.0.5:29400", "job-7-a1", host=False)
    assert "join_timeout=600,is_host=0" in launch_command([], 1, cpu=True, rendezvous=joiner)


def test_the_slurm_script_runs_one_torchrun_per_machine() -> None:
    script = slurm_script(["train", "--set", "name='it''s'", "--out", "/shared/run"], 2, 4)
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=1" in script
    assert "#SBATCH --gpus-per-node=4" in script
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    words = shlex.split(srun)
    assert words[:3] == ["srun", "--ntasks-per-node=1", "bash"]
    inner = shlex.split(words[-1])
    assert inner[:3] == ["python", "-m", "torch.distributed.run"]
    args = get_args_parser().parse_args(inner[3:])
    assert args.nnodes == "2" and args.nproc_per_node == "4"
    assert args.rdzv_backend == "c10d" and args.rdzv_endpoint == "${TREEGRPO_RDZV_HOST}:29400"
    assert args.rdzv_id == "${SLURM_JOB_ID}"  # new at every requeue, as an attempt's id
    assert "is_host" not in args.rdzv_conf  # torchrun matches the head's host name itself
    # Quoted once for srun's shell and once for each machine's: the words arrive unchanged.
    assert args.training_script_args == ["train", "--set", "name='it''s'", "--out", "/shared/run"]
    # The head is the allocation's first host, found on every machine.
    assert (
        'export TREEGRPO_RDZV_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'
        in script
    )


def test_the_kubeflow_trainjob_runs_the_same_command_on_every_pod() -> None:
    manifest = train_job(
        ["train", "--config", "/cfg/job.yaml", "--out", "/data/run"],
        nodes=2,
        gpus=8,
        name="flux-ft",
        image="treegrpo-worker-gpu:latest",
    )
    assert manifest["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert manifest["kind"] == "TrainJob"
    trainer = manifest["spec"]["trainer"]
    assert manifest["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 8)
    assert trainer["command"] == [
        "python",
        "-m",
        "treegrpo.cli",
        "train",
        "--config",
        "/cfg/job.yaml",
        "--out",
        "/data/run",
    ]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 8


def test_treegrpo_launcher_prints_them_with_nodes_and_gpus_from_the_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import yaml

    settings = ["--preset", "tiny-treegrpo", "--set", "nodes=2", "--set", "gpus=1"]
    assert main(["launcher", "slurm", *settings, "--out", "/shared/run"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --nodes=2" in script and "#SBATCH --gpus-per-node=1" in script
    assert "-m treegrpo.cli train --preset tiny-treegrpo --set nodes=2" in script
    assert main(["launcher", "kubeflow", *settings, "--out", "/data/run", "--name", "x"]) == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    assert manifest["metadata"]["name"] == "x"
    assert manifest["spec"]["trainer"]["numNodes"] == 2
    assert manifest["spec"]["trainer"]["command"][3:] == [
        "train",
        *settings,
        "--out",
        "/data/run",
        "--quiet",
    ]


def test_a_multi_node_run_started_without_torchrun_says_how_to_start_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["train", "--preset", "tiny-treegrpo", "--set", "nodes=2", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 2
    assert "under torchrun (one agent per machine" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The in-process run uses one intra-op thread, as each launched rank does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _two_agents(argv: list[str], epochs: int) -> None:
    """`treegrpo <argv>` as two machines of one rank each: two torchrun agents that meet at a
    c10d rendezvous on 127.0.0.1 (node 0 serves the store)."""
    endpoint = f"127.0.0.1:{_free_port()}"
    agents = [
        subprocess.Popen(
            launch_command(
                argv,
                1,
                cpu=True,
                rendezvous=Rendezvous(
                    2, endpoint, "test-run", host=node == 0, local_addr="127.0.0.1"
                ),
            ),
            env=_launch_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in range(2)
    ]
    outputs = [agent.communicate(timeout=LAUNCH_TIMEOUT)[0] for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    # Rank 0 alone reports.
    assert sum(output.count(f"completed at epoch {epochs}/{epochs}") for output in outputs) == 1


@pytest.mark.slow
def test_two_torchrun_agents_train_exactly_like_the_two_process_run(tmp_path: Path) -> None:
    """Two agents meet at a c10d rendezvous on 127.0.0.1 (node 0 serves the store): nodes=2
    with one rank each is the same 2-rank job as gpus=2 on one machine, so metrics and weights
    are equal, bit for bit (two ranks sum a gradient in the same order either way)."""
    settings = ["--preset", "tiny-treegrpo", "--quiet", "--set", "device=cpu"]
    settings += [
        "--set",
        "epochs=2",
        "--set",
        "prompts_per_epoch=4",
        "--set",
        "train.minibatches=2",
    ]
    one_machine, two_machines = tmp_path / "one-machine", tmp_path / "two-machines"
    _run(
        launch_command(["train", *settings, "--set", "gpus=2", "--out", str(one_machine)], 2, True)
    )

    _two_agents(["train", *settings, "--set", "nodes=2", "--out", str(two_machines)], 2)

    timing = ("time/", "throughput/", "wall_clock", "cpu_clock")
    strip = [
        {k: v for k, v in m.items() if not k.startswith(timing)} for m in _metrics(two_machines)
    ]
    assert strip == [
        {k: v for k, v in m.items() if not k.startswith(timing)} for m in _metrics(one_machine)
    ]
    a, b = _weights(one_machine), _weights(two_machines)
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.slow
def test_two_torchrun_agents_shard_as_hsdp_and_train_like_one_process(
    tmp_path: Path, one_thread: None
) -> None:
    """nodes=2 with train.sharding=fsdp is HSDP on a (2 machines, 1 rank) mesh: replicated
    across the machines, sharded within each. It trains what one process trains (gradient
    norms and weights within float rounding, micro-batch counts uneven across the machines and
    padded), its checkpoints hold every tensor whole once (a replica, not two halves), and its
    epoch-1 checkpoint resumed on one process gives epoch 2 bit for bit."""
    settings = ["--preset", "tiny-treegrpo", "--quiet", "--set", "device=cpu"]
    settings += ["--set", "epochs=2", "--set", "prompts_per_epoch=8"]
    settings += ["--set", "train.minibatches=2", "--set", "train.micro_batch=2"]
    settings += ["--set", "train.sharding=fsdp"]
    one, machines = tmp_path / "one", tmp_path / "machines"
    assert main(["train", *settings, "--out", str(one)]) == 0
    _two_agents(["train", *settings, "--set", "nodes=2", "--out", str(machines)], 2)

    for epoch, (ma, mb) in enumerate(zip(_metrics(one), _metrics(machines), strict=True), 1):
        for name in ("grad_norm", "loss", "reward_mean", "ratio_mean"):
            assert mb[name] == pytest.approx(ma[name], rel=1e-5, abs=1e-7), (epoch, name)
    assert sum(m["sharding/padding_forwards"] for m in _metrics(machines)) > 0
    final = [latest_checkpoint(run / "checkpoints") for run in (one, machines)]
    assert final[0] is not None and final[1] is not None
    a, b = checkpoint_weights(final[0]), checkpoint_weights(final[1])
    diff = torch.cat([(a[name] - b[name]).abs().flatten() for name in a])
    assert (
        a.keys() == b.keys()
        and float(diff.max()) <= 0.1 * resolve_config("tiny-treegrpo").train.effective_lr
    )

    # Replicated across the machines: DCP stores each tensor whole, once (flat FSDP over the
    # same 2 ranks would store two halves of each).
    import torch.distributed.checkpoint as dcp

    metadata = dcp.FileSystemReader(str(final[1] / DCP_DIR)).read_metadata().state_dict_metadata
    weights = {k: v for k, v in metadata.items() if k.startswith("model.")}
    assert weights and all(len(meta.chunks) == 1 for meta in weights.values())  # type: ignore[union-attr]
    state = json.loads((final[1] / "state.json").read_text())["state"]
    assert (state["shares"], state["shards"]) == (2, 1)

    on_one = tmp_path / "on_one"
    shutil.copytree(machines, on_one)
    shutil.rmtree(on_one / "checkpoints" / "epoch-000002")
    resume = ["train", "--resume", str(on_one), "--set", "nodes=1", "--quiet"]
    assert main(resume) == 0
    timing = ("time/", "throughput/", "wall_clock", "cpu_clock", "sharding/")
    assert [{k: v for k, v in m.items() if not k.startswith(timing)} for m in _metrics(on_one)] == [
        {k: v for k, v in m.items() if not k.startswith(timing)} for m in _metrics(machines)
    ]
    resumed = checkpoint_weights(on_one / "checkpoints" / "epoch-000002")
    assert all(torch.equal(resumed[name], b[name]) for name in b)
