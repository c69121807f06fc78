"""Step formulas of `treegrpo.stepping` (docs/TREEGRPO.md §4) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from treegrpo.stepping import (
    ddim_mean_std,
    ddim_predicted_x0,
    flow_ode_step,
    flow_predicted_x0,
    flow_sde_mean_std,
    gaussian_log_prob,
)

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)  # 0.9189385332


def scalar(value: float) -> torch.Tensor:
    """A one-sample, one-pixel state (1, 1, 1, 1)."""
    return torch.full((1, 1, 1, 1), value, dtype=torch.float32)


# -- gaussian_log_prob --------------------------------------------------------------------------


def test_gaussian_log_prob_matches_torch_normal_on_random_tensors() -> None:
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(5, 3, 4, 4, generator=g)
    std = torch.rand(5, 1, 1, 1, generator=g) + 0.1  # per-sample std, broadcast over pixels
    sample = mean + std * torch.randn(5, 3, 4, 4, generator=g)
    expected = torch.distributions.Normal(mean, std).log_prob(sample).mean(dim=(1, 2, 3))
    got = gaussian_log_prob(sample, mean, std)
    assert got.shape == (5,)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_gaussian_log_prob_with_two_batch_dims_matches_torch_normal() -> None:
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(4, 1, 3, 4, 4, generator=g)  # (parents, 1, C, H, W)
    std = torch.rand(4, 1, 1, 1, 1, generator=g) + 0.1
    sample = mean + std * torch.randn(4, 3, 3, 4, 4, generator=g)  # (parents, k, C, H, W)
    expected = torch.distributions.Normal(mean, std).log_prob(sample).mean(dim=(2, 3, 4))
    got = gaussian_log_prob(sample, mean, std, batch_dims=2)
    assert got.shape == (4, 3)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_gaussian_log_prob_literal() -> None:
    # std = 2, two dims: x = mu gives -log 2 - log sqrt(2 pi) = -0.6931472 - 0.9189385 = -1.6120857;
    # x = mu + 2 adds -(2^2) / (2 * 2^2) = -0.5, giving -2.1120857. Mean of the two: -1.8620857.
    mean = torch.tensor([[1.0, 1.0]])
    std = torch.tensor([[2.0]])
    at_mean = gaussian_log_prob(torch.tensor([[1.0, 1.0]]), mean, std)
    mixed = gaussian_log_prob(torch.tensor([[1.0, 3.0]]), mean, std)
    assert at_mean.item() == pytest.approx(-math.log(2.0) - LOG_SQRT_2PI, abs=1e-6)
    assert at_mean.item() == pytest.approx(-1.6120857, abs=1e-6)
    assert mixed.item() == pytest.approx(-1.8620857, abs=1e-6)


def test_gaussian_log_prob_is_a_per_dimension_mean_not_a_sum() -> None:
    # The same per-pixel value on 1 or 64 pixels gives the same log-prob (mean, not sum).
    small = gaussian_log_prob(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1))
    large = gaussian_log_prob(torch.zeros(1, 64), torch.zeros(1, 64), torch.ones(1, 1))
    assert small.item() == pytest.approx(-LOG_SQRT_2PI, abs=1e-6)
    assert large.item() == pytest.approx(-LOG_SQRT_2PI, abs=1e-6)


# -- flow matching ------------------------------------------------------------------------------


def test_flow_sde_at_eta_zero_is_the_ode_step() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 4, 4, generator=g)
    v = torch.randn(4, 3, 4, 4, generator=g)
    sigma = torch.tensor([1.0, 0.8, 0.5, 0.1]).reshape(4, 1, 1, 1)
    sigma_next = torch.tensor([0.9, 0.6, 0.4, 0.0]).reshape(4, 1, 1, 1)
    mean, std = flow_sde_mean_std(x, v, sigma, sigma_next, eta=0.0)
    assert torch.all(std == 0.0)
    torch.testing.assert_close(mean, flow_ode_step(x, v, sigma, sigma_next), rtol=0, atol=1e-7)


def test_flow_ode_step_literal() -> None:
    # x' = x + v (sigma' - sigma) = 1 + 2 * (0.4 - 0.5) = 0.8
    out = flow_ode_step(scalar(1.0), scalar(2.0), scalar(0.5), scalar(0.4))
    assert out.item() == pytest.approx(0.8, abs=1e-6)


def test_flow_sde_mean_std_literal() -> None:
    # sigma = 0.5, sigma' = 0.4, eta = 0.7, x = 1, v = 2:
    #   dt      = 0.4 - 0.5 = -0.1
    #   sigma_t = 0.7 * sqrt(0.5 / (1 - 0.5)) = 0.7;   sigma_t^2 = 0.49
    #   x coef  = 1 + 0.49 / (2 * 0.5) * (-0.1) = 1 - 0.049 = 0.951
    #   v coef  = (1 + 0.49 * (1 - 0.5) / (2 * 0.5)) * (-0.1) = 1.245 * (-0.1) = -0.1245
    #   mu      = 0.951 * 1 + (-0.1245) * 2 = 0.702
    #   std     = 0.7 * sqrt(0.1) = 0.2213594
    mean, std = flow_sde_mean_std(scalar(1.0), scalar(2.0), scalar(0.5), scalar(0.4), eta=0.7)
    assert mean.item() == pytest.approx(0.702, abs=1e-6)
    assert std.item() == pytest.approx(0.7 * math.sqrt(0.1), abs=1e-6)
    assert std.item() == pytest.approx(0.2213594, abs=1e-6)


def test_flow_sde_at_sigma_one_uses_sigma_next_in_the_denominator() -> None:
    # sigma = 1 would divide by 1 - sigma = 0; the next sigma stands in: sigma' = 0.9, eta = 0.7,
    # x = 1, v = 2:
    #   dt      = -0.1
    #   sigma_t = 0.7 * sqrt(1 / (1 - 0.9)) = 0.7 * sqrt(10) = 2.2135944;  sigma_t^2 = 4.9
    #   x coef  = 1 + 4.9 / (2 * 1) * (-0.1) = 1 - 0.245 = 0.755
    #   v coef  = (1 + 4.9 * (1 - 1) / 2) * (-0.1) = -0.1
    #   mu      = 0.755 - 0.2 = 0.555
    #   std     = 2.2135944 * sqrt(0.1) = sqrt(0.49) = 0.7
    mean, std = flow_sde_mean_std(scalar(1.0), scalar(2.0), scalar(1.0), scalar(0.9), eta=0.7)
    assert math.isfinite(mean.item()) and math.isfinite(std.item())
    assert mean.item() == pytest.approx(0.555, abs=1e-6)
    assert std.item() == pytest.approx(0.7, abs=1e-6)


def test_flow_sde_std_scales_linearly_with_eta() -> None:
    _, std_a = flow_sde_mean_std(scalar(1.0), scalar(2.0), scalar(0.5), scalar(0.4), eta=0.35)
    _, std_b = flow_sde_mean_std(scalar(1.0), scalar(2.0), scalar(0.5), scalar(0.4), eta=0.7)
    assert std_b.item() == pytest.approx(2.0 * std_a.item(), rel=1e-6)


def test_flow_predicted_x0_literal() -> None:
    # x0 = x - sigma v = 1 - 0.5 * 2 = 0
    assert flow_predicted_x0(scalar(1.0), scalar(2.0), scalar(0.5)).item() == pytest.approx(0.0)


# -- DDIM ---------------------------------------------------------------------------------------
# alpha_t = 0.36, alpha_prev = 0.64 give round numbers: sqrt(alpha_t) = 0.6, sqrt(1 - alpha_t) = 0.8,
# sqrt(alpha_prev) = 0.8, sqrt(1 - alpha_prev) = 0.6.


def test_ddim_predicted_x0_literal() -> None:
    # x0 = (x - sqrt(1 - 0.36) eps) / sqrt(0.36) = (1 - 0.8 * 0.5) / 0.6 = 0.6 / 0.6 = 1
    out = ddim_predicted_x0(scalar(1.0), scalar(0.5), scalar(0.36))
    assert out.item() == pytest.approx(1.0, abs=1e-6)


def test_ddim_eta_zero_is_deterministic_ddim() -> None:
    # x0 = 1 (above); mu = sqrt(0.64) x0 + sqrt(1 - 0.64) eps = 0.8 * 1 + 0.6 * 0.5 = 1.1, std = 0
    mean, std = ddim_mean_std(scalar(1.0), scalar(0.5), scalar(0.36), scalar(0.64), eta=0.0)
    assert mean.item() == pytest.approx(1.1, abs=1e-6)
    assert std.item() == 0.0


def test_ddim_eta_zero_matches_the_deterministic_formula_on_random_tensors() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 4, 4, generator=g)
    eps = torch.randn(3, 2, 4, 4, generator=g)
    alpha_t = torch.tensor([0.05, 0.3, 0.9]).reshape(3, 1, 1, 1)
    alpha_prev = torch.tensor([0.2, 0.5, 0.999]).reshape(3, 1, 1, 1)
    x0 = (x - torch.sqrt(1 - alpha_t) * eps) / torch.sqrt(alpha_t)
    expected = torch.sqrt(alpha_prev) * x0 + torch.sqrt(1 - alpha_prev) * eps
    mean, std = ddim_mean_std(x, eps, alpha_t, alpha_prev, eta=0.0)
    torch.testing.assert_close(mean, expected, rtol=1e-6, atol=1e-6)
    assert torch.all(std == 0.0)


def test_ddim_mean_std_literal_eta_one() -> None:
    # alpha_t = 0.36, alpha_prev = 0.64, eta = 1, x = 1, eps = 0.5:
    #   x0      = 1 (above)
    #   sigma_t = sqrt((1 - 0.64) / (1 - 0.36)) * sqrt(1 - 0.36 / 0.64)
    #           = sqrt(0.5625) * sqrt(0.4375) = 0.75 * 0.6614378 = 0.4960784
    #   sigma_t^2 = 0.5625 * 0.4375 = 0.24609375
    #   dir     = sqrt(1 - 0.64 - 0.24609375) = sqrt(0.11390625) = 0.3375
    #   mu      = 0.8 * 1 + 0.3375 * 0.5 = 0.96875
    mean, std = ddim_mean_std(scalar(1.0), scalar(0.5), scalar(0.36), scalar(0.64), eta=1.0)
    assert mean.item() == pytest.approx(0.96875, abs=1e-6)
    assert std.item() == pytest.approx(0.75 * math.sqrt(0.4375), abs=1e-6)
    assert std.item() == pytest.approx(0.4960784, abs=1e-6)


def test_ddim_std_literal_eta_half() -> None:
    # std = eta * sqrt((1 - a_p) / (1 - a_t)) * sqrt(1 - a_t / a_p); a_t = 0.25, a_p = 0.5, eta = 0.5:
    #   = 0.5 * sqrt(0.5 / 0.75) * sqrt(1 - 0.5) = 0.5 * 0.8164966 * 0.7071068 = 0.2886751 (= 0.5/sqrt 3)
    _, std = ddim_mean_std(scalar(0.3), scalar(-0.2), scalar(0.25), scalar(0.5), eta=0.5)
    assert std.item() == pytest.approx(0.5 / math.sqrt(3.0), abs=1e-6)
