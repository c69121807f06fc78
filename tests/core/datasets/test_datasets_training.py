"""A digits run on a 50,000-row dataset: its trees' prompts are the dataset's, and every reward
receives each prompt's row metadata."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from treegrpo.callbacks import Callback
from treegrpo.config import RunConfig, resolve_config
from treegrpo.datasets.digits import SHIPPED, digit_rows, write_jsonl
from treegrpo.datasets.importer import import_file, import_folder
from treegrpo.models.registry import load_model
from treegrpo.rewards.digits import digit_judge
from treegrpo.rewards.registry import score_images
from treegrpo.trainer import Trainer
from treegrpo.tree_record import TreeRecord


class Trees(Callback):
    def __init__(self) -> None:
        self.prompts: list[str] = []

    def on_tree(self, epoch: int, record: TreeRecord) -> None:
        self.prompts.append(record.prompt)


def _store(tmp_path: Path, rows: int) -> tuple[Path, str]:
    source = write_jsonl(tmp_path / "digits.jsonl", digit_rows(rows, seed=1))
    manifest = import_file(source, tmp_path / "work")
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    (tmp_path / "work").rename(datasets / manifest["sha256"])
    return datasets, manifest["sha256"]


def test_score_images_hands_each_image_its_metadata() -> None:
    seen: list[Any] = []

    def reward(images: Tensor, prompts: Sequence[str], metadata: Any) -> Tensor:
        seen.append(list(metadata))
        return torch.tensor([float(m.get("digit", -1)) for m in metadata])

    images = torch.zeros(2, 1, 8, 8)
    scores = score_images({"r": reward}, images, ["a", "b"], [{"digit": 3}, {}])
    assert scores["r"].tolist() == [3.0, -1.0] and seen == [[{"digit": 3}, {}]]
    score_images({"r": reward}, images, ["a", "b"])  # no metadata: {} each
    assert seen[-1] == [{}, {}]


def test_digit_judge_prefers_the_rows_digit_over_the_prompt() -> None:
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    prompts = ["the number 1"] * 3
    by_metadata = digit_judge(images, prompts, [{"digit": 7}] * 3)
    assert torch.equal(by_metadata, digit_judge(images, ["the number 7"] * 3))
    assert not torch.equal(by_metadata, digit_judge(images, prompts))


def test_digits_job_trains_on_a_50k_row_dataset_with_metadata(tmp_path: Path) -> None:
    datasets, sha = _store(tmp_path, 50_000)
    rows = {
        json.loads(line)["prompt"]: json.loads(line)
        for line in (tmp_path / "digits.jsonl").read_text().splitlines()
    }
    config = resolve_config(
        "digits-treegrpo",
        {
            "prompts": {"dataset": "digits-50k", "split": "train", "sha256": sha},
            "eval_prompts": ["the number 3"],
            "epochs": 2,
            "prompts_per_epoch": 2,
            "log_tree_every": 1,
            "sample_every": 0,
            "checkpoint_every": 0,
            "sampling.steps": 4,
            "tree": {"k": 2, "depth": 1},
            "device": "cpu",
        },
    )
    assert RunConfig.from_dict(config.to_dict()) == config  # the reference round-trips
    seen: list[dict[str, Any]] = []

    def judge(images: Tensor, prompts: Sequence[str], metadata: Any) -> Tensor:
        seen.extend(metadata)
        return digit_judge(images, prompts, metadata)

    trees = Trees()
    trainer = Trainer(
        config, load_model("digits", "cpu"), {"digit_judge": judge}, [trees], datasets=datasets
    )
    assert trainer.run() == "completed"
    assert len(trees.prompts) == 4 and all(p in rows for p in trees.prompts)
    # The leaves of every tree were scored with their row's metadata (the digit).
    train_rows = [m for m in seen if m]
    assert {m["digit"] for m in train_rows} <= set(range(10))
    assert all(rows[p]["digit"] in {m["digit"] for m in train_rows} for p in trees.prompts)
    # The draw is seeded: a second trainer plans the same epochs' rows.
    again = Trainer(config, load_model("digits", "cpu"), {"digit_judge": judge}, datasets=datasets)
    for epoch in range(2):
        first, second = trainer.plan_epoch(epoch), again.plan_epoch(epoch)
        assert first.prompts == second.prompts and first.metadata == second.metadata
        assert [rows[p]["digit"] for p in first.prompts] == [m["digit"] for m in first.metadata]


def test_the_shipped_digits_dataset_has_the_digit_of_every_prompt(tmp_path: Path) -> None:
    manifest = import_folder(SHIPPED, tmp_path / "v")
    assert {s: i["rows"] for s, i in manifest["splits"].items()} == {"test": 10, "train": 30}
    assert manifest["columns"] == ["digit", "template"]


def test_treegrpo_train_reads_a_pinned_dataset_from_datasets_dir(tmp_path: Path) -> None:
    from treegrpo.cli import main

    datasets, sha = _store(tmp_path, 300)
    out = tmp_path / "run"
    argv = [
        "train", "--preset", "tiny-treegrpo", "--out", str(out), "--quiet",
        "--set", "epochs=1", "--set", "prompts_per_epoch=2", "--set", "log_tree_every=1",
        "--set", f'prompts={{"dataset": "d", "sha256": "{sha}"}}',
    ]  # fmt: skip
    assert main([*argv, "--datasets", str(datasets)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["prompts"] == {"dataset": "d", "split": "train", "sha256": sha}
    trees = list((out / "artifacts").rglob("tree.json"))
    assert trees and all(json.loads(t.read_text())["prompt"].split(", sample ")[0] for t in trees)
