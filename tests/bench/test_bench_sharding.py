"""bench/sharding.py: the arithmetic it prints beside the measurement, and the per-rank state it
counts from the tensors a rank holds (a DTensor counts only its shard)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_sharding", BENCH / "sharding.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_sharding"] = module
    spec.loader.exec_module(module)
    return module


sharding = _load()


def test_arithmetic_of_flux_dev_full_fine_tune_on_8_ranks() -> None:
    lines = sharding.arithmetic(11.9e9, 8)
    assert "11.900 B" in lines[0]
    assert "190.400 GB per rank" in lines[1]  # 16 B x 11.9e9
    assert "238.000 GB per rank" in lines[2]  # 20 B x 11.9e9
    assert "23.800 GB per rank" in lines[3]  # 190.4 / 8


def test_local_state_counts_weights_and_adam_moments() -> None:
    model = torch.nn.Linear(10, 10)  # 110 float32 parameters
    optimizer = torch.optim.AdamW(model.parameters())
    assert sharding.local_state_bytes(model, optimizer) == 110 * 4
    model(torch.ones(1, 10)).sum().backward()
    optimizer.step()
    # + exp_avg and exp_avg_sq (the scalar step tensors are not counted).
    assert sharding.local_state_bytes(model, optimizer) == 3 * 110 * 4


def test_the_report_gives_the_loading_rss_of_rank_0_and_of_the_other_ranks() -> None:
    row = {"mode": "sharded", "state_gb": 0.222, "peak_gb": 1.241, "s_per_iter": 6.86}
    row["peak_kind"] = "CPU peak RSS"
    rows = [{**row, "rank": 1, "load_rss_gb": 0.555}, {**row, "rank": 0, "load_rss_gb": 0.686}]
    line = sharding.report("sharded", rows)
    assert "loaded (host peak RSS) 0.686 GB rank 0 / 0.555 GB others" in line
    assert "0.222 GB per rank" in line and "peak    1.241 GB (CPU peak RSS)" in line
    assert sharding.report("sharded", [{"rank": 0, "oom": True}]).endswith("sharded: OOM")


def test_the_small_config_is_flux_dev_narrowed_to_tens_of_millions_of_parameters() -> None:
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        model = FluxTransformer2DModel(**sharding.CONFIGS["small"])
    assert 30e6 < sum(p.numel() for p in model.parameters()) < 40e6
    assert sharding.FLUX_SMALL["attention_head_dim"] == sharding.FLUX_DEV["attention_head_dim"]
