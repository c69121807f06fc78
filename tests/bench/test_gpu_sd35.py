"""Smoke tests of bench/gpu_sd35.py: the tiny size end to end on the CPU, the SD3.5-M config."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_sd35.py"
LAST_LINE = re.compile(r"^tree_vs_dance_seconds_per_iteration: \d+\.\d\dx$")
RESULT_KEYS = {
    "algorithm",
    "error",
    "images",
    "model_evals",
    "model_calls",
    "trained_parents",
    "trained_edges",
    "rollout_seconds",
    "score_seconds",
    "update_seconds",
    "seconds_per_iteration",
    "seconds_all",
    "images_per_second",
    "rollout_peak_memory_gb",
    "update_peak_memory_gb",
    "update_resident_memory_gb",
    "rollout_tflops",
    "update_tflops",
    "rollout_mfu",
    "update_mfu",
    "update_executed_utilisation",
    "last_update_metrics",
}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu_sd35", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def run(bench: ModuleType, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    bench.main(["--size", "tiny", "--device", "cpu", "--peak-size", "128", *args])
    return capsys.readouterr().out.strip().splitlines()


def test_tiny_cpu_iteration_writes_results(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "gpu-sd35.json"
    lines = run(
        bench,
        capsys,
        *("--prompts", "2", "--k", "2", "--depth", "2", "--steps", "4"),
        *("--repeats", "1", "--warmup", "0", "--grad-checkpointing", "--json", str(out)),
    )
    assert LAST_LINE.match(lines[-1]), lines[-1]
    assert any(line.startswith("device: CPU") for line in lines)
    assert any(line.startswith("date: ") for line in lines)

    report = json.loads(out.read_text())
    assert {
        "settings",
        "date",
        "device",
        "torch",
        "cuda",
        "model",
        "peak_matmul_tflops",
        "flops",
        "flops_method",
        "results",
        "update_breakdown",
        "tree_vs_dance_seconds_per_iteration",
        "wall_seconds",
    } <= set(report)
    tree, dance = report["results"]["treegrpo"], report["results"]["dancegrpo"]
    for result in (tree, dance):
        assert set(result) == RESULT_KEYS
        assert result["error"] is None
        assert result["seconds_per_iteration"] > 0 and result["update_mfu"] > 0
        assert result["rollout_peak_memory_gb"] is None  # CPU: no CUDA memory to report
        assert result["last_update_metrics"]["ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    # Counts for 2 prompts, k = 2, d = 2, T = 4, s = 0 (docs/TREEGRPO.md §3):
    # tree evals per prompt s + (k^d - 1)/(k - 1) + k^d (T - s - d) = 0 + 3 + 4 * 2 = 11;
    # flat G = k^d = 4 trajectories x 4 steps = 16; DanceGRPO trains int(0.6 * (4 - 1)) = 1
    # step per trajectory (never the last).
    assert (tree["images"], tree["model_evals"], tree["trained_parents"]) == (8, 22, 6)
    assert tree["trained_edges"] == 12  # (k^(d+1) - k) / (k - 1) = 6 per tree
    assert (dance["images"], dance["model_evals"], dance["trained_parents"]) == (8, 32, 8)
    ratio = tree["seconds_per_iteration"], dance["seconds_per_iteration"]
    assert report["tree_vs_dance_seconds_per_iteration"] == pytest.approx(ratio[1] / ratio[0])

    flops = report["flops"]
    # Attention is counted on the math backend, so the counter meets the analytic count.
    assert flops["forward_per_state"] == flops["forward_per_state_analytic"]
    # Full fine-tune: backward ~ 2 forwards; checkpointing recomputes about one more.
    assert flops["update_per_parent_model"] == pytest.approx(3 * flops["forward_per_state"], 0.1)
    assert flops["update_per_parent_executed"] > flops["update_per_parent_model"]
    assert report["update_breakdown"]["error"] is None
    assert report["update_breakdown"]["top_ops"]


def test_tiny_lora_trains_only_adapters(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "lora.json"
    lines = run(
        bench,
        capsys,
        *("--k", "2", "--depth", "1", "--steps", "3", "--lora-rank", "2"),
        *("--repeats", "1", "--warmup", "0", "--no-profile", "--json", str(out)),
    )
    assert LAST_LINE.match(lines[-1]), lines[-1]
    report = json.loads(out.read_text())
    assert 0 < report["model"]["trainable_parameters"] < report["model"]["parameters"]
    assert all(r["error"] is None for r in report["results"].values())


def test_sd35_medium_config(bench: ModuleType) -> None:
    from diffusers import SD3Transformer2DModel

    size = bench.SIZES["sd35m"]
    with torch.device("meta"):
        transformer = SD3Transformer2DModel(**size.transformer)
    # SD3.5-Medium's transformer: 2.24 B trained parameters (2.47 B with the 384 x 384 x 1536
    # positional table the checkpoint also stores).
    assert sum(p.numel() for p in transformer.parameters()) == 2_243_171_520
    assert size.latent_size == 64 and size.text_tokens == 333
    # One row of 32 x 32 image patches + 333 text tokens; FlopCounterMode on the meta device
    # gave the same 2 * 2_442_642_604_032 for a CFG pair.
    assert bench.analytic_forward_flops(size.transformer, 32 * 32, 333) == 2_442_642_604_032


def test_flux_tiny_cpu_iteration_with_the_efficiency_options(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "flux.json"
    bench.main(
        [
            *("--size", "flux-tiny", "--device", "cpu", "--peak-size", "128"),
            *("--k", "2", "--depth", "2", "--steps", "4", "--repeats", "1", "--warmup", "0"),
            *("--dtype", "bfloat16", "--weights-dtype", "bfloat16", "--fused-adamw"),
            *("--no-profile", "--json", str(out)),
        ]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith("FLUX-architecture transformer")
    assert LAST_LINE.match(lines[-1]), lines[-1]
    assert any("bf16 weights, float32 masters" in line for line in lines)
    assert any("fused_adamw=True" in line for line in lines)
    report = json.loads(out.read_text())
    assert all(r["error"] is None for r in report["results"].values())
    tree = report["results"]["treegrpo"]
    assert tree["last_update_metrics"]["ratio_mean"] == pytest.approx(1.0, abs=1e-2)
    # The FLUX analytic count (double + single blocks) meets the counter's.
    flops = report["flops"]
    assert flops["forward_per_state"] == flops["forward_per_state_analytic"]


def test_flux1_dev_config(bench: ModuleType) -> None:
    from diffusers import FluxTransformer2DModel

    size = bench.SIZES["flux1-dev"]
    with torch.device("meta"):
        transformer = FluxTransformer2DModel(**size.transformer)
    # FLUX.1-dev's transformer: 11.9 B parameters.
    assert sum(p.numel() for p in transformer.parameters()) == pytest.approx(11.9e9, rel=0.01)
    assert size.latent_size == 64 and size.text_tokens == 512
    settings = bench.parse_args(["--size", "flux1-dev", "--device", "cpu"])
    assert settings.lora_rank == 64 and settings.cfg_scale == 1.0
