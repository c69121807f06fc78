"""The file rule (treegrpo/file_roots.py): paths resolved before the check, so `..` and links
cannot leave a root, and a refusal reads the same whether the path exists or not."""

from __future__ import annotations

from pathlib import Path

import pytest

from treegrpo.config import ConfigError
from treegrpo.file_roots import path_fields, path_problems, within_roots
from treegrpo.hub import local_folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "models" / "sd3").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "models" / "escape").symlink_to(tmp_path / "outside")
    (tmp_path / "models" / "inner").symlink_to(tmp_path / "models" / "sd3")
    return tmp_path / "models"


def test_paths_under_a_root_pass_resolved(root: Path) -> None:
    assert within_roots("model", str(root / "sd3"), [root]) == root / "sd3"
    assert within_roots("model", str(root / "inner"), [root]) == root / "sd3"
    assert within_roots("model", "./sd3", [root], base=root) == root / "sd3"
    assert within_roots("model", str(root / "not-yet"), [root]) == root / "not-yet"


def test_dotdot_links_and_absolute_paths_outside_are_refused_alike(root: Path) -> None:
    messages = set()
    for value in (
        "/etc",
        "/etc/passwd",
        "/no/such/folder",
        str(root / ".." / "outside"),
        str(root / "sd3" / ".." / ".." / "outside"),
        str(root / "missing" / ".." / ".." / "outside"),
        str(root / "escape"),
        str(root / "escape" / "file"),
        "../../../../etc",
    ):
        with pytest.raises(ConfigError) as caught:
            within_roots("reward_options.clipscore.path", value, [root], base=root)
        assert caught.value.field == "reward_options.clipscore.path"
        messages.add(caught.value.reason)
    # One message for every refusal: it says the rule, never whether the path exists.
    assert len(messages) == 1
    assert "file rule" in messages.pop()


def test_every_path_of_a_config_is_found() -> None:
    config = {
        "model": "/etc",
        "prompts": "./prompts.txt",
        "eval_prompts": ["/imagine a cat"],  # prompts are text, not paths
        "reward_options": {
            "clipscore": {"path": "clip", "processor_path": "/p", "batch_size": 4},
            "aesthetic": {"head": "h.safetensors", "dtype": "bfloat16"},
            "remote": {"url": "http://reward:8100/score"},
        },
        "tracking": {"run_name": "a/b", "project": "treegrpo"},
    }
    assert sorted(path_fields(config)) == [
        ("model", "/etc"),
        ("prompts", "./prompts.txt"),
        ("reward_options.aesthetic.head", "h.safetensors"),
        ("reward_options.clipscore.path", "clip"),
        ("reward_options.clipscore.processor_path", "/p"),
    ]
    assert list(path_fields({"model": "digits"})) == []


def test_hub_ids_need_the_cache_under_a_root(root: Path, tmp_path: Path) -> None:
    config = {"model": "org/name", "reward_options": {"pickscore": {"path": "org/clip@main"}}}
    cache = tmp_path / "hf"
    assert path_problems(config, [root, cache], hub_cache=cache) == []
    fields = [problem.field for problem in path_problems(config, [root], hub_cache=cache)]
    assert fields == ["model", "reward_options.pickscore.path"]


def test_the_loader_under_roots_never_takes_a_relative_folder_for_a_hub_id(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(root)
    (root / "org" / "name").mkdir(parents=True)
    # On one's own machine an existing relative folder wins; under roots ORG/NAME is a hub id.
    assert local_folder("model", "org/name") == Path("org/name")
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        local_folder("model", "org/name", cache_dir=root / "empty-cache", roots=[root])
    assert local_folder("model", "./org/name", roots=[root]) == root / "org" / "name"
    with pytest.raises(ConfigError, match="file rule"):
        local_folder("model", str(root / "escape"), roots=[root])
