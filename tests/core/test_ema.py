"""Flow-GRPO's EMA of the trained weights (treegrpo/ema.py): the update against hand-computed
values, the swap that gives the weights back, a checkpoint that keeps it and a resume that
continues it exactly, and a policy loaded with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from treegrpo.algorithms import resolve_for_model
from treegrpo.callbacks import Callback, SampleBatch
from treegrpo.cli import main
from treegrpo.config import ConfigError, RunConfig, resolve_config
from treegrpo.ema import EMA_FILE, WeightsEMA, ema_decay
from treegrpo.evaluate import sample_and_score
from treegrpo.models.tiny import TinyAdapter
from treegrpo.policy import has_ema, load_policy
from treegrpo.rewards.registry import load_rewards
from treegrpo.scoring import Scorer
from treegrpo.seeds import GALLERY_NOISE_STREAM, stream_seed
from treegrpo.trainer import Trainer


def test_the_decay_warms_up_and_is_capped() -> None:
    assert ema_decay(0, 0.9) == pytest.approx(1 / 10)  # (1 + 0) / (10 + 0)
    assert ema_decay(8, 0.9) == pytest.approx(9 / 18)  # 0.5
    assert ema_decay(80, 0.9) == pytest.approx(81 / 90)  # 0.9 exactly: the cap meets the ramp
    assert ema_decay(1000, 0.9) == 0.9


def _one_weight(value: float) -> nn.Linear:
    layer = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(value)
    return layer


def test_the_average_moves_every_nth_step_by_one_minus_the_decay() -> None:
    layer = _one_weight(1.0)
    ema = WeightsEMA(layer, decay=0.9, every=2)
    with torch.no_grad():
        layer.weight.fill_(3.0)
    assert ema.step(0) is False  # (0 + 1) % 2 != 0: no update
    assert float(ema.average["weight"]) == 1.0
    assert ema.step(1) is True
    # decay_1 = 2 / 11; ema = 1 + (1 - 2/11) (3 - 1) = 1 + 18/11 = 2.636364
    assert float(ema.average["weight"]) == pytest.approx(1 + 18 / 11)


def test_sampling_with_the_average_gives_the_weights_back_bit_for_bit() -> None:
    layer = _one_weight(0.1234567)
    ema = WeightsEMA(layer, decay=0.9, every=1)
    with torch.no_grad():
        layer.weight.fill_(0.7654321)
    ema.step(0)
    before = layer.weight.detach().clone()
    with ema.swapped_in():
        assert torch.equal(layer.weight.detach(), ema.average["weight"])
    assert torch.equal(layer.weight.detach(), before)


def test_a_sharded_run_refuses_the_ema() -> None:
    with pytest.raises(ConfigError, match=r"train\.ema"):
        RunConfig.from_dict({"gpus": 2, "train": {"ema": True, "sharding": "fsdp"}})


def _last_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("epoch-*"))[-1]


def test_the_checkpoint_keeps_the_ema_and_a_resume_continues_it_exactly(tmp_path: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ["--preset", "tiny-treegrpo", "--quiet", "--set", "train.ema=true"]
    common += ["--set", "train.ema_every=1", "--set", "train.ema_decay=0.5"]
    assert main(["train", *common, "--set", "epochs=4", "--out", str(straight)]) == 0
    assert main(["train", *common, "--set", "epochs=2", "--out", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--set", "epochs=4", "--quiet"]) == 0

    a = load_file(str(_last_checkpoint(straight) / EMA_FILE))
    b = load_file(str(_last_checkpoint(split) / EMA_FILE))
    weights = load_file(str(_last_checkpoint(straight) / "model.safetensors"))
    assert a.keys() == b.keys() == weights.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # An average of several steps' weights is not the last step's weights.
    assert any(not torch.equal(a[name], weights[name]) for name in a)

    checkpoint = _last_checkpoint(straight)
    assert has_ema(checkpoint)
    config = RunConfig.from_dict(json.loads((checkpoint / "state.json").read_text())["config"])
    averaged = load_policy(config, checkpoint, ema=True).denoiser.state_dict()
    trained = load_policy(config, checkpoint).denoiser.state_dict()
    for name in a:
        assert torch.equal(averaged[name], a[name]), name
        assert torch.equal(trained[name], weights[name]), name


def test_without_ema_nothing_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny-treegrpo", "--quiet", "--out", str(out)]) == 0
    assert not has_ema(_last_checkpoint(out))
    assert resolve_config("tiny-treegrpo").train.ema is False


class _Galleries(Callback):
    def __init__(self) -> None:
        self.batches: list[SampleBatch] = []

    def on_samples(self, batch: SampleBatch) -> None:
        self.batches.append(batch)


def test_galleries_sample_with_the_ema_weights(tmp_path: Path) -> None:
    config = resolve_config(
        "tiny-treegrpo",
        {"train.ema": True, "train.ema_every": 1, "train.ema_decay": 0.5, "sample_every": 0},
    )
    galleries = _Galleries()
    trainer = Trainer(
        config,
        TinyAdapter("flow"),
        load_rewards(config.reward_weights),
        callbacks=[galleries],
        checkpoint_root=tmp_path,
    )
    assert trainer.run() == "completed"
    (final,) = galleries.batches  # the final epoch's gallery
    checkpoint = tmp_path / f"epoch-{config.epochs:06d}"
    trained = trainer.adapter.denoiser.state_dict()
    # The gallery is what the EMA weights draw from the gallery noise, not the trained weights.
    for ema in (True, False):
        policy = load_policy(config, checkpoint, ema=ema)
        resolved, schedule = resolve_for_model(config, policy)
        generator = torch.Generator().manual_seed(stream_seed(config.seed, 0, GALLERY_NOISE_STREAM))
        initial = torch.randn((len(final.prompts), *policy.latent_shape), generator=generator)
        scorer = Scorer(policy.decode, load_rewards(config.reward_weights), config.reward_weights)
        images, _ = sample_and_score(
            policy, schedule, scorer, final.prompts, initial, resolved.sampling.resolved_cfg_scale
        )
        assert torch.equal(images, final.images) is ema
    # ...and the trainer's own weights came back after the gallery.
    for name, value in load_file(str(checkpoint / "model.safetensors")).items():
        assert torch.equal(trained[name], value), name
