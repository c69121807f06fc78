"""Step grids from the model's own diffusers scheduler (docs/TREEGRPO.md §7.0), on scheduler configs
written here: the sigmas and timesteps equal what diffusers' `set_timesteps` makes of them."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift as diffusers_calculate_shift

from treegrpo.grids import build_schedule, calculate_shift, flow_schedule
from treegrpo.schedules import DDIMSchedule, FlowMatchSchedule

SD3 = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000}
FLUX = {
    **SD3,
    "use_dynamic_shifting": True,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "shift": 3.0,
}


def diffusers_flow(config: dict[str, object], steps: int, **kwargs: object) -> tuple[list, list]:
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    scheduler.set_timesteps(steps, **kwargs)
    return scheduler.sigmas.tolist(), scheduler.timesteps.tolist()


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [4, 10, 28])
def test_flow_grid_is_diffusers_set_timesteps(shift: float, steps: int) -> None:
    config = {**SD3, "shift": shift}
    schedule = flow_schedule(config, steps)
    sigmas, timesteps = diffusers_flow(config, steps)
    torch.testing.assert_close(schedule.sigma, torch.tensor(sigmas), rtol=0, atol=1e-7)
    torch.testing.assert_close(schedule.timesteps, torch.tensor(timesteps), rtol=0, atol=1e-4)
    torch.testing.assert_close(schedule.t[:-1], schedule.timesteps)
    assert schedule.t[-1] == 0.0


def test_sd35_shift3_grid_literal() -> None:
    # SD3.5 (shift 3), T = 10, as docs/TREEGRPO.md §7.0 lists it; the hand-made linspace grid had
    # .964, .923, ..., .250 instead.
    schedule = flow_schedule({**SD3, "shift": 3.0}, 10)
    expected = [1.0, 0.960, 0.913, 0.858, 0.790, 0.707, 0.602, 0.465, 0.278, 0.009, 0.0]
    torch.testing.assert_close(schedule.sigma, torch.tensor(expected), rtol=0, atol=6e-4)


def test_dancegrpo_grid_literal() -> None:
    # DanceGRPO: linspace(1, 0, 11) shifted by 3: 3 s / (1 + 2 s): .9 -> 2.7/2.8 = .964, ...
    schedule = flow_schedule({**SD3, "shift": 3.0}, 10, grid="dancegrpo")
    expected = [1.0, 0.964, 0.923, 0.875, 0.818, 0.750, 0.667, 0.563, 0.429, 0.250, 0.0]
    torch.testing.assert_close(schedule.sigma, torch.tensor(expected), rtol=0, atol=6e-4)


@pytest.mark.parametrize("seq_len", [64, 1024, 4096])
def test_dynamic_shifting_uses_mu_from_the_sequence_length(seq_len: int) -> None:
    mu = diffusers_calculate_shift(seq_len, 256, 4096, 0.5, 1.15)
    assert calculate_shift(seq_len, 256, 4096, 0.5, 1.15) == pytest.approx(mu, rel=1e-12)
    schedule = flow_schedule(FLUX, 8, image_seq_len=seq_len)
    sigmas, timesteps = diffusers_flow(FLUX, 8, mu=mu)
    torch.testing.assert_close(schedule.sigma, torch.tensor(sigmas), rtol=0, atol=1e-7)
    torch.testing.assert_close(schedule.timesteps, torch.tensor(timesteps), rtol=0, atol=1e-4)
    # FLUX's pipeline passes its own base sigmas, linspace(1, 1/T, T); they are shifted alike.
    base = torch.linspace(1.0, 1.0 / 8, 8).tolist()
    passed = flow_schedule(FLUX, 8, image_seq_len=seq_len, base_sigmas=base)
    sigmas, _ = diffusers_flow(FLUX, 8, mu=mu, sigmas=base)
    torch.testing.assert_close(passed.sigma, torch.tensor(sigmas), rtol=0, atol=1e-7)


def test_dynamic_shifting_needs_the_sequence_length() -> None:
    with pytest.raises(ValueError, match="sequence length"):
        flow_schedule(FLUX, 8)


@pytest.mark.parametrize(
    ("spacing", "offset", "expected"),
    [
        ("leading", 1, [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]),
        ("leading", 0, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]),
        ("trailing", 0, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
    ],
)
def test_ddim_grid_follows_timestep_spacing(spacing: str, offset: int, expected: list[int]) -> None:
    config = {"timestep_spacing": spacing, "steps_offset": offset, "beta_schedule": "scaled_linear"}
    schedule = build_schedule("epsilon", config, 10)
    assert isinstance(schedule, DDIMSchedule)
    assert schedule.timesteps.tolist() == expected
    reference = DDIMScheduler.from_config(config)
    reference.set_timesteps(10)
    assert schedule.timesteps.tolist() == reference.timesteps.tolist()
    acp = reference.alphas_cumprod
    torch.testing.assert_close(schedule.alpha, acp[reference.timesteps])
    # diffusers' step lands on t - 1000 // 10, or on final_alpha_cumprod below 0.
    torch.testing.assert_close(schedule.alpha_prev[-1], reference.final_alpha_cumprod.float())


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_ode_step_equals_diffusers_step(spacing: str) -> None:
    config = {
        "timestep_spacing": spacing,
        "steps_offset": 1,
        "set_alpha_to_one": False,
        "clip_sample": False,  # SD1.5 ships it off; our DDIM never clips x0
    }
    schedule = build_schedule("epsilon", config, 10)
    reference = DDIMScheduler.from_config(config)
    reference.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    for i, t in enumerate(reference.timesteps):
        eps = torch.randn(2, 4, 8, 8, generator=g)
        expected = reference.step(eps, t, x, eta=0.0).prev_sample
        torch.testing.assert_close(schedule.ode(x, eps, i), expected, rtol=1e-5, atol=1e-5)
        x = expected


def test_ddim_zero_noise_step_is_a_clear_error_not_nan() -> None:
    # steps_offset 0 (leading) ends with a step from timestep 0 onto alphas_cumprod[0]: no noise.
    schedule = build_schedule("epsilon", {"steps_offset": 0, "set_alpha_to_one": False}, 10)
    with pytest.raises(ValueError, match=r"steps \[9\].*steps_offset"):
        schedule.check_stochastic(range(10), eta=1.0)
    schedule.check_stochastic(range(9), eta=1.0)  # the others are fine


def test_flow_grid_options_are_refused_for_ddim() -> None:
    with pytest.raises(ValueError, match="flow models only"):
        build_schedule("epsilon", None, 10, grid="dancegrpo")


def test_dancegrpo_sde_step_literal() -> None:
    # flux_step with x = 1, v = 0.5, sigma 0.5 -> 0.25, eta 0.3:
    #   D = 0.25; x0_hat = 1 - 0.5 * 0.5 = 0.75; score = -(1 - 0.5 * 0.75) / 0.25 = -2.5
    #   mean = 1 - 0.25 * 0.5 + 0.5 * 0.09 * 0.25 * (-2.5) = 0.875 - 0.028125 = 0.846875
    #   std = 0.3 * sqrt(0.25) = 0.15
    schedule = FlowMatchSchedule(
        torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]),
        torch.tensor([1000.0, 750, 500, 250]),
        "dancegrpo",
    )
    mean, std = schedule.gaussian(torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 0.5), 2, 0.3)
    assert float(mean) == pytest.approx(0.846875, abs=1e-6)
    assert float(std) == pytest.approx(0.15, abs=1e-7)
