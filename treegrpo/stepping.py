"""Every step formula of the project, and nothing else (docs/TREEGRPO.md §4).

Pure functions over float32 tensors. Scalars per sample (sigma, alpha, ...) come as tensors that
broadcast against the state, e.g. shape (B, 1, 1, 1). Rollout and training both call these, so a
stored rollout re-evaluated under the same policy gives ratio exp(0) == 1 exactly.

Symbols:
    x            current state x_t               v / eps   model output (velocity / noise)
    sigma        flow noise level at t           sigma_next  at the next (less noisy) step
    alpha_t      DDPM cumulative alpha at t      alpha_prev  at the next step in sampling order
    eta          SDE noise scale                 std       std of the Gaussian step
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob(sample: Tensor, mean: Tensor, std: Tensor, batch_dims: int = 1) -> Tensor:
    """log N(sample; mean, std^2), averaged over all but the first `batch_dims` dimensions.

    The per-dimension mean (not the sum) follows Flow-GRPO / DanceGRPO, so log-probs are O(1)
    whatever the latent size.
    """
    log_prob = -((sample - mean) ** 2) / (2.0 * std**2) - torch.log(std) - LOG_SQRT_2PI
    return log_prob.mean(dim=tuple(range(batch_dims, log_prob.ndim)))


def flow_sde_mean_std(
    x: Tensor, v: Tensor, sigma: Tensor, sigma_next: Tensor, eta: float
) -> tuple[Tensor, Tensor]:
    """Mean and std of the flow-matching SDE step (Flow-GRPO's Eq. for the reverse SDE).

    1. sigma_t = eta * sqrt(sigma / (1 - sigma)); at sigma == 1 the denominator uses sigma_next.
    2. mu = x (1 + sigma_t^2 dt / (2 sigma)) + v (1 + sigma_t^2 (1 - sigma) / (2 sigma)) dt.
    3. std = sigma_t sqrt(-dt), with dt = sigma_next - sigma < 0.
    """
    dt = sigma_next - sigma
    one_minus = 1.0 - torch.where(sigma == 1.0, sigma_next, sigma)
    sigma_t = eta * torch.sqrt(sigma / one_minus)
    mean = (
        x * (1.0 + sigma_t**2 / (2.0 * sigma) * dt)
        + v * (1.0 + sigma_t**2 * (1.0 - sigma) / (2.0 * sigma)) * dt
    )
    std = sigma_t * torch.sqrt(-dt)
    return mean, std


def dancegrpo_sde_mean_std(
    x: Tensor, v: Tensor, sigma: Tensor, sigma_next: Tensor, eta: float
) -> tuple[Tensor, Tensor]:
    """Mean and std of DanceGRPO's own flow SDE step (`flux_step` in fastvideo/train_grpo_flux.py).

    D = sigma - sigma_next > 0 is the step length, x0_hat = x - sigma v the clean estimate.
    1. score = -(x - (1 - sigma) x0_hat) / sigma^2   (the Gaussian score of x_t given x0_hat).
    2. mu = x - D v + 0.5 eta^2 D score: the Euler step x + v (sigma_next - sigma) plus the
       original's `-0.5 eta^2 score * dsigma` with dsigma = -D (the sign as the code has it;
       the reverse-time SDE's correction pulls towards the data).
    3. std = eta sqrt(D).
    """
    step = sigma - sigma_next
    x0_hat = flow_predicted_x0(x, v, sigma)
    score = -(x - (1.0 - sigma) * x0_hat) / sigma**2
    mean = x - step * v + 0.5 * eta**2 * step * score
    std = eta * torch.sqrt(step)
    return mean, std


def flow_ode_step(x: Tensor, v: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """Euler step of the probability-flow ODE: x' = x + v dt (the SDE at eta = 0)."""
    return x + v * (sigma_next - sigma)


def flow_predicted_x0(x: Tensor, v: Tensor, sigma: Tensor) -> Tensor:
    """Rectified flow x_t = (1 - sigma) x0 + sigma noise and v = noise - x0 give x0 = x - sigma v."""
    return x - sigma * v


def ddim_predicted_x0(x: Tensor, eps: Tensor, alpha_t: Tensor) -> Tensor:
    """x0 = (x - sqrt(1 - alpha_t) eps) / sqrt(alpha_t)  (DDIM Eq. 12, first term)."""
    return (x - torch.sqrt(1.0 - alpha_t) * eps) / torch.sqrt(alpha_t)


def ddim_mean_std(
    x: Tensor, eps: Tensor, alpha_t: Tensor, alpha_prev: Tensor, eta: float
) -> tuple[Tensor, Tensor]:
    """Mean and std of the DDIM step with stochasticity eta (DDIM Eq. 12 and 16).

    1. x0 = (x - sqrt(1 - alpha_t) eps) / sqrt(alpha_t).
    2. sigma_t = eta sqrt((1 - alpha_prev) / (1 - alpha_t)) sqrt(1 - alpha_t / alpha_prev).
    3. mu = sqrt(alpha_prev) x0 + sqrt(1 - alpha_prev - sigma_t^2) eps;  std = sigma_t.
    """
    x0 = ddim_predicted_x0(x, eps, alpha_t)
    sigma_t = (
        eta
        * torch.sqrt((1.0 - alpha_prev) / (1.0 - alpha_t))
        * torch.sqrt(1.0 - alpha_t / alpha_prev)
    )
    direction = torch.sqrt((1.0 - alpha_prev - sigma_t**2).clamp_min(0.0))
    mean = torch.sqrt(alpha_prev) * x0 + direction * eps
    return mean, sigma_t
