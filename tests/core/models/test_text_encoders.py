"""`train.text_encoders` (treegrpo/text_encoders.py): offload and cache give the conditioning
that encoders kept on the device give, cache encodes each distinct prompt once, and a cached run
trains exactly like the default one. The machine has no GPU: the moves between host and device
are moves from the CPU to the CPU here; what is checked is that the encoders end in host
memory, that the numbers do not move, and that cached prompts skip the encoders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_diffusers import PROMPTS, save_sd3

from treegrpo.cli import main
from treegrpo.config import ConfigError, resolve_config
from treegrpo.models.base import ModelAdapter
from treegrpo.models.local import load_local_model
from treegrpo.text_encoders import text_encoder_modules, use_text_encoders


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sd3") / "tiny-sd3"
    save_sd3(folder, with_t5=True, seed=4)
    return folder


class CountingEncoder:
    """The adapter's text encoder, counting the prompts it is asked to encode."""

    def __init__(self, adapter: ModelAdapter) -> None:
        self.inner = adapter.encode_text  # type: ignore[attr-defined]
        self.prompts: list[str] = []

    def __call__(self, prompts: list[str]) -> object:
        self.prompts.extend(prompts)
        return self.inner(prompts)


def test_the_setting_is_checked_and_defaults_to_the_device() -> None:
    assert resolve_config("tiny-treegrpo").train.text_encoders == "device"
    config = resolve_config("tiny-treegrpo", assignments=["train.text_encoders=cache"])
    assert config.train.text_encoders == "cache"
    with pytest.raises(ConfigError) as error:
        resolve_config("tiny-treegrpo", assignments=["train.text_encoders=disk"])
    assert error.value.field == "train.text_encoders"


def test_sd3s_three_encoders_are_found(sd3_folder: Path) -> None:
    adapter = load_local_model(sd3_folder)
    names = sorted(type(module).__name__ for module in text_encoder_modules(adapter))
    assert names == ["CLIPTextModelWithProjection", "CLIPTextModelWithProjection", "T5EncoderModel"]


@pytest.mark.parametrize("placement", ["offload", "cache"])
def test_offload_and_cache_give_the_devices_conditioning(sd3_folder: Path, placement: str) -> None:
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0]]
    expected = load_local_model(sd3_folder).encode_prompts(prompts)
    adapter = load_local_model(sd3_folder)
    counter = CountingEncoder(adapter)
    adapter.encode_text = counter  # type: ignore[attr-defined]
    use_text_encoders(adapter, placement)  # type: ignore[arg-type]
    for _ in range(2):
        got = adapter.encode_prompts(prompts)
        assert got.tensors.keys() == expected.tensors.keys()
        for name, tensor in got.tensors.items():
            # cache encodes the 2 distinct prompts as a batch of 2, not 3: rounding may move
            torch.testing.assert_close(tensor, expected.tensors[name], rtol=1e-5, atol=1e-6)
        for module in text_encoder_modules(adapter):
            assert all(p.device.type == "cpu" for p in module.parameters())
    if placement == "cache":
        assert counter.prompts == [PROMPTS[0], PROMPTS[1]]  # each once, then from the cache
    else:
        assert counter.prompts == prompts * 2


def _metrics(run: Path) -> list[dict[str, float]]:
    """Every epoch's metrics but the clock's."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    timing = ("time/", "throughput/", "wall_clock", "cpu_clock")
    return [
        {k: v for k, v in json.loads(line)["metrics"].items() if not k.startswith(timing)}
        for line in lines
    ]


def test_a_cached_run_trains_exactly_like_the_default(tmp_path: Path) -> None:
    settings = ["--preset", "tiny-treegrpo", "--quiet", "--set", "device=cpu", "--set", "epochs=2"]
    device, cache = tmp_path / "device", tmp_path / "cache"
    assert main(["train", *settings, "--out", str(device)]) == 0
    assert (
        main(["train", *settings, "--set", "train.text_encoders=cache", "--out", str(cache)]) == 0
    )
    assert _metrics(cache) == _metrics(device) and _metrics(device)
