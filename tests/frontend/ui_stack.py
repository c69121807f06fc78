"""The real stack for the dashboard's browser tests, in a temporary folder:

- `treegrpo migrate` on a fresh SQLite database, `treegrpo api-key create` for the user's key;
- `uvicorn backend.main:app` (the API with the dashboard mounted at /ui) on a free loopback port;
- `treegrpo worker` on kombu's filesystem transport (the embedded default), running the shipped
  digits model on the CPU.

Every process is started here, in its own session, and stopped here by its id. Their output goes
to files in the folder; `Stack.logs()` shows their tails when a test fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stack_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):
        # The stack's own settings only: nothing from the developer's shell or .env.
        if name.startswith("TREEGRPO_"):
            del env[name]
    env.update(
        {
            "TREEGRPO_DATA_DIR": str(data_dir),
            "TREEGRPO_DATABASE_URL": f"sqlite:///{data_dir / 'treegrpo.db'}",
            "TREEGRPO_HEARTBEAT_SECONDS": "1",
            "TREEGRPO_CANCEL_GRACE_SECONDS": "20",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
        }
    )
    # The stack runs the code under test (this checkout), also where the venv's install is
    # an editable one of another checkout.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class Stack:
    root: Path
    base: str  # http://127.0.0.1:PORT
    key: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def ui(self) -> str:
        return f"{self.base}/ui/"

    def api(self, key: str | None = None) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=f"{self.base}/api/v1", headers=headers, timeout=15)

    def job(self, job_id: int) -> dict[str, Any]:
        with self.api() as api:
            return dict(api.get(f"/jobs/{job_id}").json())

    def job_count(self) -> int:
        with self.api() as api:
            return int(api.get("/jobs", params={"limit": 1}).json()["count"])

    def wait_job(self, job_id: int, statuses: set[str], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            if job["status"] in ("failed", "lost") and not statuses & {"failed", "lost"}:
                raise AssertionError(f"job {job_id} {job['status']}: {job.get('error')}")
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} still {job.get('status')} after {timeout:.0f} s")

    def logs(self, tail: int = 40) -> str:
        out = []
        for name in self.procs:
            path = self.root / f"{name}.log"
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                out.append(f"--- {name} ({path}) ---\n" + "\n".join(lines))
        return "\n".join(out)

    def stop(self) -> None:
        # SIGTERM first (the worker checkpoints and requeues), then SIGKILL; each process leads
        # its own session, so its children go with it.
        for proc in self.procs.values():
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def _run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _spawn(stack: Stack, name: str, args: list[str]) -> None:
    log = (stack.root / f"{name}.log").open("wb")
    stack.procs[name] = subprocess.Popen(
        args,
        env=stack.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=stack.root,
        start_new_session=True,
    )


def seed_tree(
    stack: Stack,
    *trees: dict[str, Any],
    name: str = "seeded big tree",
    images: str = "flat",
    atlas: bool = True,
) -> int:
    """A finished train job holding `trees` (ui_factories.tree_json's shape; tree i is logged
    at epoch i) and a small PNG per node in the stack's artifact folder, written straight into the stack's database (a k=4, d=4
    tree would take the digits model minutes to grow on 2 cores). Returns the job id.

    `images`: tree_images.node_image's kind ("colour": 128 px textured scenes, "digits", "flat");
    the job's model follows it (a colour tree is not drawn pixelated). `atlas`: write the tree's
    atlas as the worker does when it logs a tree (else the API builds it on first request)."""

    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from backend import models

    artifacts = Path(stack.env["TREEGRPO_DATA_DIR"]) / "artifacts"
    engine = create_engine(stack.env["TREEGRPO_DATABASE_URL"])
    with Session(engine) as session:
        job = models.Job(
            kind="train",
            name=name,
            status="succeeded",
            preset="digits-treegrpo",
            config={
                "algorithm": "treegrpo",
                "model": "sd3" if images == "colour" else "digits",
                "epochs": 1,
            },
            params={},
            algorithm="treegrpo",
            progress_step=1,
            progress_total=1,
        )
        session.add(job)
        session.flush()
        for epoch, tree in enumerate(trees):
            _seed_one(session, models, artifacts, job.id, epoch, tree, images, atlas)
        session.commit()
        return int(job.id)


def _seed_one(
    session: Any,
    models: Any,
    artifacts: Path,
    job_id: int,
    epoch: int,
    tree: dict[str, Any],
    images: str,
    atlas: bool,
) -> None:
    import json

    from tree_images import node_image, node_png

    from treegrpo.atlas import atlas_name, build_atlas, drawable

    folder = f"jobs/{job_id}/trees/epoch-{epoch:06d}/tree-00"
    row = models.Tree(
        job_id=job_id,
        epoch=epoch,
        index=0,
        prompt=tree["prompt"],
        seed=0,
        window_start=tree["window_start"],
        k=tree["k"],
        depth=tree["depth"],
        steps=tree["steps"],
        backup="mean",
        artifact_dir=folder,
    )
    session.add(row)
    session.flush()
    (artifacts / folder / "images").mkdir(parents=True, exist_ok=True)
    shown = drawable((n["id"], n["parent_id"], n["log_prob"] is not None) for n in tree["nodes"])
    ids: dict[int, int] = {}
    rows = []
    for node in tree["nodes"]:  # parents come first in the factory's order
        rel = f"{folder}/images/node-{node['node_index']:05d}.png"
        (artifacts / rel).write_bytes(node_png(images, node["node_index"]))
        rows.append(
            {
                "tree_id": row.id,
                "node_index": node["node_index"],
                "depth": node["depth"],
                "step_index": node["step_index"],
                "t": node["t"],
                "sigma": node["sigma"],
                "is_leaf": node["is_leaf"],
                "log_prob_old": node["log_prob"],
                "reward": node["reward"],
                "advantage": node["advantage"],
                "image_path": rel,
            }
        )
    # Ids given here (the next free ones), so that 13,655 nodes need one flush, not one each.
    from sqlalchemy import func, select

    next_id = int(session.scalar(select(func.max(models.TreeNode.id))) or 0) + 1
    for offset, node in enumerate(tree["nodes"]):
        ids[node["id"]] = next_id + offset
    session.add_all(
        models.TreeNode(
            **values,
            id=ids[node["id"]],
            parent_id=ids.get(node["parent_id"]) if node["parent_id"] is not None else None,
        )
        for node, values in zip(tree["nodes"], rows, strict=True)
    )
    session.flush()
    if atlas:
        tiles = [
            (n["node_index"], node_image(images, n["node_index"]))
            for n in tree["nodes"]
            if n["id"] in shown
        ]
        data, index = build_atlas(tiles)
        name = atlas_name(index)
        (artifacts / folder / name).write_bytes(data)
        (artifacts / folder / "atlas.json").write_text(json.dumps({**index, "image": name}))


def add_key(env: dict[str, str], name: str, role: str) -> str:
    """`treegrpo api-key create NAME --role ROLE` on the stack's database; the new key."""
    command = [str(BIN / "treegrpo"), "api-key", "create", name, "--role", role]
    return _run(command, env).split()[0].strip()


def start_stack(
    root: Path,
    *,
    worker: bool = True,
    interactive_worker: bool = False,
    timeout: float = 90,
    reads_require_key: bool = False,
    settings: dict[str, str] | None = None,
) -> Stack:
    """`reads_require_key`: a closed studio, as compose runs it (GET routes need a key too);
    `interactive_worker`: a second worker for the interactive lane (the first takes training
    only); `settings`: more TREEGRPO_* variables for every process."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    env = stack_env(data)
    env.update(settings or {})
    if reads_require_key:
        env["TREEGRPO_READS_REQUIRE_KEY"] = "true"
    treegrpo = str(BIN / "treegrpo")
    _run([treegrpo, "migrate"], env)
    # The stack's user runs the whole studio, as the embedded local key does.
    key = add_key(env, "browser-test", "admin")
    port = free_port()
    stack = Stack(root=root, base=f"http://127.0.0.1:{port}", key=key, env=env)
    try:
        uvicorn = [sys.executable, "-m", "uvicorn", "backend.main:app"]
        _spawn(stack, "api", [*uvicorn, "--host", "127.0.0.1", "--port", str(port)])
        if worker:
            queues = ["--queues", "treegrpo"] if interactive_worker else []
            _spawn(stack, "worker", [treegrpo, "worker", "--loglevel", "info", *queues])
        if interactive_worker:
            # The interactive lane's own worker: branches never wait behind training.
            lane = ["--queues", "treegrpo-interactive", "--hostname", "interactive@%h"]
            _spawn(stack, "worker-interactive", [treegrpo, "worker", "--loglevel", "info", *lane])
        deadline = time.monotonic() + timeout
        while True:
            if stack.procs["api"].poll() is not None:
                raise RuntimeError("the API exited:\n" + stack.logs())
            with suppress(httpx.HTTPError):
                if httpx.get(stack.ui, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the API did not serve /ui/ in {timeout:.0f} s\n" + stack.logs()
                )
            time.sleep(0.3)
    except BaseException:
        stack.stop()
        raise
    return stack


def seed_checkpoint(stack: Stack, name: str = "seeded LoRA run") -> tuple[int, Path]:
    """A finished LoRA train job with a checkpoint in the stack's artifact folder: weights,
    state, and the trainer's diffusers export in lora/ (safetensors files with small arrays).
    Returns the job id and the checkpoint's folder."""
    import numpy as np
    from safetensors.numpy import save_file
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from backend import models

    engine = create_engine(stack.env["TREEGRPO_DATABASE_URL"])
    with Session(engine) as session:
        job = models.Job(
            kind="train",
            name=name,
            status="succeeded",
            preset="digits-treegrpo",
            config={"algorithm": "treegrpo", "model": "digits", "train": {"lora_rank": 4}},
            params={},
            algorithm="treegrpo",
            progress_step=2,
            progress_total=2,
        )
        session.add(job)
        session.flush()
        relpath = f"jobs/{job.id}/checkpoints/epoch-000002"
        job.checkpoint_path = relpath
        session.commit()
        job_id = int(job.id)
    folder = Path(stack.env["TREEGRPO_DATA_DIR"]) / "artifacts" / relpath
    (folder / "lora").mkdir(parents=True)
    save_file({"layer.weight": np.arange(12, dtype=np.float32)}, str(folder / "model.safetensors"))
    (folder / "state.json").write_text('{"state": {"epoch": 2}}')
    lora = {"transformer.proj.lora_A.weight": np.ones((4, 8), np.float32)}
    save_file(lora, str(folder / "lora" / "pytorch_lora_weights.safetensors"))
    (folder / "lora" / "README.md").write_text("# LoRA card")
    return job_id, folder
