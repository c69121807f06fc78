"""Step schedules (`treegrpo.schedules`): the noise levels of each step and per-sample indexing."""

from __future__ import annotations

import pytest
import torch

from treegrpo import stepping
from treegrpo.grids import DEFAULT_FLOW_CONFIG, build_schedule, flow_schedule
from treegrpo.schedules import DDIMSchedule, FlowMatchSchedule, Schedule


def linear_flow(steps: int, shift: float = 1.0) -> FlowMatchSchedule:
    """linspace(1, 0, T + 1), shifted: DanceGRPO's grid, whose literals are easy to write."""
    return flow_schedule({**DEFAULT_FLOW_CONFIG, "shift": shift}, steps, grid="dancegrpo")


def sd15_ddim(steps: int) -> DDIMSchedule:
    """SD1.5's DDIM grid (scaled-linear betas, leading spacing, steps_offset 1)."""
    schedule = build_schedule("epsilon", None, steps)
    assert isinstance(schedule, DDIMSchedule)
    return schedule


def sd15_alphas_cumprod() -> torch.Tensor:
    """Scaled-linear betas 0.00085 .. 0.012 over 1000 steps, computed independently here."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


# -- flow matching ------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 4, 10])
def test_flow_sigmas_fall_from_one_to_zero(steps: int) -> None:
    schedule = linear_flow(steps)
    assert schedule.sigma.shape == (steps + 1,)
    assert schedule.t.shape == (steps + 1,)
    assert schedule.sigma[0].item() == 1.0
    assert schedule.sigma[-1].item() == 0.0
    assert torch.all(schedule.sigma[1:] < schedule.sigma[:-1])
    torch.testing.assert_close(schedule.t, schedule.sigma * 1000)


def test_flow_sigmas_linear_literal() -> None:
    # T = 4, no shift: linspace(1, 0, 5)
    schedule = linear_flow(4)
    torch.testing.assert_close(schedule.sigma, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


def test_flow_sigmas_shift_literal() -> None:
    # shift 3: sigma' = 3 s / (1 + 2 s) on s = 1, .75, .5, .25, 0
    #   1 -> 3/3 = 1;  .75 -> 2.25/2.5 = 0.9;  .5 -> 1.5/2 = 0.75;  .25 -> .75/1.5 = 0.5;  0 -> 0
    schedule = linear_flow(4, shift=3.0)
    torch.testing.assert_close(schedule.sigma, torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]))
    torch.testing.assert_close(schedule.t, torch.tensor([1000.0, 900.0, 750.0, 500.0, 0.0]))


def test_flow_gaussian_uses_sigma_of_step_and_next() -> None:
    schedule = linear_flow(4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=g)
    v = torch.randn(2, 3, 4, 4, generator=g)
    mean, std = schedule.gaussian(x, v, 2, eta=0.7)
    sigma, sigma_next = torch.tensor(0.5), torch.tensor(0.25)
    exp_mean, _ = stepping.flow_sde_mean_std(x, v, sigma, sigma_next, 0.7)
    torch.testing.assert_close(mean, exp_mean)
    # std = 0.7 * sqrt(0.5 / 0.5) * sqrt(0.25) = 0.35 for every sample
    assert std.shape == (2, 1, 1, 1)
    torch.testing.assert_close(std, torch.full((2, 1, 1, 1), 0.35))
    torch.testing.assert_close(schedule.ode(x, v, 2), x - 0.25 * v)


def test_flow_first_step_is_finite() -> None:
    schedule = linear_flow(10)
    x = torch.ones(1, 1, 2, 2)
    mean, std = schedule.gaussian(x, x, 0, eta=0.7)
    assert torch.isfinite(mean).all() and torch.isfinite(std).all()
    assert std.item() > 0


# -- DDIM ---------------------------------------------------------------------------------------


def test_ddim_timesteps_descending_literal() -> None:
    # leading spacing, stride 1000 // 10 = 100, offset 1: 901, 801, ..., 1
    schedule = sd15_ddim(10)
    assert schedule.timesteps.tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    assert schedule.alpha.shape == schedule.alpha_prev.shape == (10,)
    assert schedule.t.shape == (11,)


@pytest.mark.parametrize("steps", [1, 4, 10, 50])
def test_ddim_alphas_per_state(steps: int) -> None:
    schedule = sd15_ddim(steps)
    acp = sd15_alphas_cumprod()
    assert torch.all(schedule.timesteps[1:] < schedule.timesteps[:-1])
    torch.testing.assert_close(schedule.alpha, acp[schedule.timesteps].float())
    # each step lands on the next step's alpha; the last on alphas_cumprod[0] = 1 - 0.00085
    torch.testing.assert_close(schedule.alpha_prev[:-1], schedule.alpha[1:])
    assert torch.all(schedule.alpha[1:] > schedule.alpha[:-1])
    assert schedule.alpha_prev[-1].item() == pytest.approx(0.99915, abs=1e-6)


def test_ddim_last_sde_step_has_positive_std() -> None:
    schedule = sd15_ddim(10)
    x = torch.ones(1, 1, 2, 2)
    for i in range(10):
        _, std = schedule.gaussian(x, x, i, eta=1.0)
        assert std.item() > 0, f"step {i}"
    # last step by hand: alpha_t = acp[1], alpha_prev = acp[0]
    acp = sd15_alphas_cumprod()
    a_t, a_p = acp[1].item(), acp[0].item()
    expected = ((1 - a_p) / (1 - a_t)) ** 0.5 * (1 - a_t / a_p) ** 0.5
    _, std = schedule.gaussian(x, x, 9, eta=1.0)
    assert std.item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("steps", [10, 500, 999])
def test_ddim_steps_stay_distinct(steps: int) -> None:
    # Every step must move to a strictly less noisy state, or the SDE std
    # sqrt(1 - alpha_t / alpha_prev) is 0 and log p is NaN. 500 is the config's limit and 999
    # the most a 1000-timestep DDIM allows with steps_offset 1.
    schedule = sd15_ddim(steps)
    assert torch.all(schedule.timesteps[1:] < schedule.timesteps[:-1])
    x = torch.ones(steps, 1, 1, 1)
    _, std = schedule.gaussian(x, x, torch.arange(steps), eta=1.0)
    assert torch.all(std > 0), (std.flatten() <= 0).nonzero().flatten().tolist()


def test_ddim_refuses_more_steps_than_distinct_timesteps() -> None:
    with pytest.raises(ValueError, match="at most 999 steps"):
        sd15_ddim(1000)


def test_ddim_ode_is_deterministic_ddim() -> None:
    schedule = sd15_ddim(10)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 4, generator=g)
    eps = torch.randn(2, 3, 4, 4, generator=g)
    a_t, a_p = schedule.alpha[3], schedule.alpha_prev[3]
    x0 = (x - torch.sqrt(1 - a_t) * eps) / torch.sqrt(a_t)
    torch.testing.assert_close(
        schedule.ode(x, eps, 3), torch.sqrt(a_p) * x0 + torch.sqrt(1 - a_p) * eps
    )


# -- per-sample step indices --------------------------------------------------------------------


@pytest.mark.parametrize("schedule", [linear_flow(10), sd15_ddim(10)], ids=["flow", "ddim"])
def test_per_sample_steps_match_scalar_steps(schedule: Schedule) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 4, 4, generator=g)
    out = torch.randn(4, 3, 4, 4, generator=g)
    steps = torch.tensor([0, 3, 3, 9], dtype=torch.long)
    mean, std = schedule.gaussian(x, out, steps, eta=0.7)
    ode = schedule.ode(x, out, steps)
    x0 = schedule.predicted_x0(x, out, steps)
    timesteps = schedule.model_timesteps(steps, 4)
    assert mean.shape == (4, 3, 4, 4) and std.shape == (4, 1, 1, 1)
    for row, step in enumerate(steps.tolist()):
        one = slice(row, row + 1)
        row_mean, row_std = schedule.gaussian(x[one], out[one], step, eta=0.7)
        torch.testing.assert_close(mean[one], row_mean, rtol=0, atol=0)
        torch.testing.assert_close(std[one], row_std, rtol=0, atol=0)
        torch.testing.assert_close(ode[one], schedule.ode(x[one], out[one], step), rtol=0, atol=0)
        torch.testing.assert_close(
            x0[one], schedule.predicted_x0(x[one], out[one], step), rtol=0, atol=0
        )
        assert timesteps[row] == schedule.model_timesteps(step, 1)[0]
    # rows at different steps really differ (the indexing is per row, not the first row's step)
    assert not torch.equal(std[0], std[3])
