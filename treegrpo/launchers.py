"""External launchers: a site whose scheduler owns the GPUs (SLURM, Kubernetes with Kubeflow
Trainer) runs a multi-node job itself. Each machine runs the command a studio node runs (one
torchrun agent with c10d rendezvous over its `gpus` processes); only who starts the agents and
where they meet differ. These functions write that command in the site's own terms:

    print(slurm_script(["train", "--config", "job.yaml", "--out", "/shared/run"], 2, 8))
    manifest = train_job(["train", ...], nodes=2, gpus=8, name="flux-ft", image="treegrpo:gpu")

- SLURM: `sbatch` allocates the machines; `srun` starts one task per machine, and each runs
  torchrun; the rendezvous is the allocation's first host, its id the SLURM job id (new at every
  requeue, as an attempt's is in the studio).
- Kubeflow Trainer: a `TrainJob` on the `torch-distributed` runtime (numNodes, numProcPerNode);
  the runtime starts torchrun in every pod and sets the rendezvous itself, so the container
  runs `treegrpo ...` (Kubeflow Trainer docs, "PyTorch guide").
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from treegrpo.distributed import Rendezvous, launch_command

SLURM_PORT = 29400
TRAINJOB_API = "trainer.kubeflow.org/v1alpha1"
TORCH_RUNTIME = "torch-distributed"


def slurm_script(
    argv: Sequence[str], nodes: int, gpus: int, port: int = SLURM_PORT, python: str = "python"
) -> str:
    """An `sbatch` script that runs `treegrpo <argv>` on `nodes` machines x `gpus` processes."""
    rendezvous = Rendezvous(
        nodes=nodes,
        endpoint=f"${{TREEGRPO_RDZV_HOST}}:{port}",
        run_id="${SLURM_JOB_ID}",
        # torchrun serves the store on the machine whose host name matches the endpoint's.
        local_addr="$(hostname)",
    )
    command = launch_command(argv, gpus, cpu=False, rendezvous=rendezvous)
    command[0] = python
    # The ${...} and $(...) words expand in each machine's shell (srun passes the exported
    # variables on); every other word is quoted, and the whole line once more for `bash -c`.
    words = " ".join(word if "$" in word else shlex.quote(word) for word in command)
    return "\n".join(
        [
            "#!/bin/bash",
            f"#SBATCH --nodes={nodes}",
            "#SBATCH --ntasks-per-node=1",
            f"#SBATCH --gpus-per-node={gpus}",
            "#SBATCH --requeue",
            'export TREEGRPO_RDZV_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            f"srun --ntasks-per-node=1 bash -c {shlex.quote(words)}",
            "",
        ]
    )


def train_job(
    argv: Sequence[str], *, nodes: int, gpus: int, name: str, image: str
) -> dict[str, Any]:
    """A Kubeflow Trainer `TrainJob` that runs `treegrpo <argv>` on `nodes` pods x `gpus`."""
    return {
        "apiVersion": TRAINJOB_API,
        "kind": "TrainJob",
        "metadata": {"name": name},
        "spec": {
            "runtimeRef": {"name": TORCH_RUNTIME},
            "trainer": {
                "image": image,
                "numNodes": nodes,
                "numProcPerNode": gpus,
                # The runtime wraps this in torchrun (its rendezvous, its ranks), per pod.
                "command": ["python", "-m", "treegrpo.cli", *argv],
                "resourcesPerNode": {"limits": {"nvidia.com/gpu": gpus}},
            },
        },
    }
