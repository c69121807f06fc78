"""Step grids from the model's own diffusers scheduler (docs/TREEGRPO.md §7.0).

The sigmas and timesteps a model samples at are whatever its saved scheduler config makes of
T steps, so this module builds that scheduler and reads them off `set_timesteps(T)`:
- flow models: `FlowMatchEulerDiscreteScheduler` (shift, dynamic shifting with mu from the image
  sequence length as diffusers' pipelines compute it, sigma_min, shift_terminal, ...);
- epsilon models: `DDIMScheduler` (`timestep_spacing`, `steps_offset`, `set_alpha_to_one`, the
  betas), whatever scheduler class the folder ships (SD1.5 ships PNDM's config).
Only the grid comes from the library; the SDE and log-prob math stays in `stepping`.

`grid="dancegrpo"` keeps DanceGRPO's own grid instead (fastvideo/train_grpo_flux.py:
`sigma_schedule = torch.linspace(1, 0, T + 1)`, then `sd3_time_shift(shift, ...)`), an option
for flow models only.

    schedule = build_schedule("flow", {"shift": 3.0}, steps=10)
    schedule.sigma  # 1, .960, .913, .858, .790, .707, .602, .465, .278, .009, 0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch

from treegrpo.schedules import DDIMSchedule, Family, FlowMatchSchedule, FlowSDE, Schedule

Grid = Literal["model", "dancegrpo"]
GRIDS = ("model", "dancegrpo")

# What a folder without its own scheduler config, or a built-in model, samples with.
DEFAULT_FLOW_CONFIG: dict[str, Any] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 1.0,
}
# SD1.5's (the PNDM config it ships, read as DDIM): scaled-linear betas, leading spacing.
DEFAULT_DDIM_CONFIG: dict[str, Any] = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "timestep_spacing": "leading",
    "clip_sample": False,
}


def calculate_shift(
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """mu for dynamic shifting: linear in the image's token count, as diffusers' FLUX and SD3
    pipelines compute it (`calculate_shift` in pipeline_flux.py): base_shift at base_seq_len
    tokens, max_shift at max_seq_len."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * slope + (base_shift - slope * base_seq_len)


def dynamic_shift_mu(config: Mapping[str, Any], image_seq_len: int) -> float:
    """mu from a scheduler config's base/max sequence lengths and shifts (diffusers' defaults)."""
    return calculate_shift(
        image_seq_len,
        int(config.get("base_image_seq_len", 256)),
        int(config.get("max_image_seq_len", 4096)),
        float(config.get("base_shift", 0.5)),
        float(config.get("max_shift", 1.15)),
    )


def flow_schedule(
    config: Mapping[str, Any],
    steps: int,
    grid: Grid = "model",
    sde: FlowSDE = "flowgrpo",
    image_seq_len: int | None = None,
    base_sigmas: list[float] | None = None,
) -> FlowMatchSchedule:
    """The flow schedule of a FlowMatchEulerDiscreteScheduler config for T = `steps`.

    `image_seq_len` (latent tokens) is needed when the config uses dynamic shifting.
    `base_sigmas` are the unshifted sigmas a pipeline passes to `set_timesteps` (FLUX's pipeline
    passes linspace(1, 1/T, T)); None lets the scheduler make them, as SD3's pipeline does.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; known: {', '.join(GRIDS)}")
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(dict(config))
    if grid == "dancegrpo":
        # DanceGRPO: linspace(1, 0, T + 1) shifted by the model's shift (sd3_time_shift).
        shift = float(scheduler.config.shift)
        base = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        sigmas = shift * base / (1.0 + (shift - 1.0) * base)
        timesteps = sigmas[:-1] * int(scheduler.config.num_train_timesteps)
        return FlowMatchSchedule(sigmas, timesteps, sde)
    mu = None
    if scheduler.config.get("use_dynamic_shifting", False):
        if image_seq_len is None:
            raise ValueError(
                "this scheduler uses dynamic shifting: the image's sequence length (latent "
                "tokens) is needed to compute mu"
            )
        mu = dynamic_shift_mu(scheduler.config, image_seq_len)
    scheduler.set_timesteps(steps, device="cpu", sigmas=base_sigmas, mu=mu)
    sigmas = scheduler.sigmas.to(torch.float64)  # (T + 1,), the last one 0
    timesteps = scheduler.timesteps.to(torch.float64)  # (T,)
    if sigmas.shape != (steps + 1,) or float(sigmas[-1]) != 0.0:
        raise ValueError(
            f"the scheduler config made {tuple(sigmas.shape)} sigmas ending in "
            f"{float(sigmas[-1])} for {steps} steps; expected {steps + 1} ending in 0 "
            "(invert_sigmas and other inverted grids are not supported)"
        )
    return FlowMatchSchedule(sigmas, timesteps, sde)


def ddim_schedule(config: Mapping[str, Any], steps: int) -> DDIMSchedule:
    """The DDIM schedule of a scheduler config (any class's; read as DDIMScheduler's) for T."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(dict(config))
    prediction = scheduler.config.prediction_type
    if prediction != "epsilon":
        raise ValueError(
            f"scheduler prediction_type {prediction!r} is not supported: the DDIM family here "
            "expects epsilon prediction"
        )
    train_steps = int(scheduler.config.num_train_timesteps)
    if steps > train_steps:
        raise ValueError(
            f"DDIM with {train_steps} training timesteps takes at most that many steps"
        )
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps.to(torch.long)  # (T,) high to low
    if int(timesteps.max()) >= train_steps:
        offset = int(scheduler.config.steps_offset)
        raise ValueError(
            f"DDIM with {train_steps} training timesteps and steps_offset {offset} takes at most "
            f"{train_steps - offset} steps, got {steps}"
        )
    if len(set(timesteps.tolist())) != steps:
        raise ValueError(
            f"{steps} DDIM steps over {train_steps} training timesteps repeat a timestep "
            f"({timesteps.tolist()}): use fewer steps"
        )
    return DDIMSchedule(
        timesteps,
        scheduler.alphas_cumprod,
        float(scheduler.final_alpha_cumprod),
        train_steps,
    )


def build_schedule(
    family: Family,
    config: Mapping[str, Any] | None,
    steps: int,
    grid: Grid = "model",
    sde: FlowSDE = "flowgrpo",
    image_seq_len: int | None = None,
    base_sigmas: list[float] | None = None,
) -> Schedule:
    """The schedule a model of `family` with scheduler `config` samples T = `steps` with."""
    if family == "flow":
        return flow_schedule(
            config if config is not None else DEFAULT_FLOW_CONFIG,
            steps,
            grid,
            sde,
            image_seq_len,
            base_sigmas,
        )
    if grid != "model":
        raise ValueError(f"sampling.grid {grid!r} applies to flow models only; DDIM has its own")
    if sde != "flowgrpo":
        raise ValueError(
            f"sampling.sde {sde!r} is a flow-matching SDE; an epsilon (DDIM) model samples with "
            "DDIM's own (eta = 1 as DDPO)"
        )
    return ddim_schedule(config if config is not None else DEFAULT_DDIM_CONFIG, steps)
