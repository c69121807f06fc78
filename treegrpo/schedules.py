"""Step schedules: which noise level each of the T steps sits at, and how to take a step there.

A schedule owns the per-step constants (sigmas or cumulative alphas) and turns a model output
into the Gaussian (mean, std) of an SDE step, a deterministic ODE step, or the predicted clean
sample, by calling `stepping`. Indices `i` are step numbers 0..T-1 (0 = pure noise), given as an
int or a LongTensor (B,) so one batch may mix steps, as the update does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import torch
from torch import Tensor

from treegrpo import stepping

Family = Literal["flow", "epsilon"]


def _per_sample(values: Tensor, i: int | Tensor, like: Tensor) -> Tensor:
    """values[i] shaped (B, 1, ..., 1) to broadcast against `like` (B, ...), as float32."""
    index = torch.as_tensor(i, device=values.device, dtype=torch.long)
    picked = values[index].to(device=like.device, dtype=torch.float32)
    if picked.ndim == 0:
        picked = picked.expand(like.shape[0])
    return picked.reshape(-1, *([1] * (like.ndim - 1)))


class Schedule(ABC):
    """T steps of one model family. `t` and `sigma` describe states 0..T (T = clean)."""

    family: Family
    steps: int
    t: Tensor  # (T + 1,) the state's time as the model sees it (last entry: 0)
    sigma: Tensor  # (T + 1,) the state's noise-to-signal level (last entry: 0)

    @abstractmethod
    def model_timesteps(self, i: int | Tensor, batch: int) -> Tensor:
        """(batch,) timestep values fed to the denoiser at step i."""

    @abstractmethod
    def gaussian(
        self, x: Tensor, out: Tensor, i: int | Tensor, eta: float
    ) -> tuple[Tensor, Tensor]:
        """(mean, std) of the stochastic step from state i to i + 1; float32."""

    @abstractmethod
    def ode(self, x: Tensor, out: Tensor, i: int | Tensor) -> Tensor:
        """Deterministic step from state i to i + 1; float32."""

    @abstractmethod
    def predicted_x0(self, x: Tensor, out: Tensor, i: int | Tensor) -> Tensor:
        """The model's estimate of the clean sample at state i; float32."""


class FlowMatchSchedule(Schedule):
    """Rectified flow (SD3 family): sigmas fall from 1 to 0, the model predicts velocity.

    `shift` is SD3's timestep shift sigma' = shift s / (1 + (shift - 1) s); 1 = linear.
    """

    family: Family = "flow"

    def __init__(self, steps: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> None:
        base = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        sigmas = shift * base / (1.0 + (shift - 1.0) * base)
        self.steps = steps
        self.sigma = sigmas.to(torch.float32)  # (T + 1,)
        self.t = (sigmas * num_train_timesteps).to(torch.float32)  # (T + 1,)

    def model_timesteps(self, i: int | Tensor, batch: int) -> Tensor:
        # The tables live on the CPU; the update passes per-row steps that may sit on a GPU.
        index = torch.as_tensor(i, dtype=torch.long).cpu()
        return self.t[index].expand(batch) if index.ndim == 0 else self.t[index]

    def gaussian(
        self, x: Tensor, out: Tensor, i: int | Tensor, eta: float
    ) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(i, dtype=torch.long)
        sigma = _per_sample(self.sigma, index, x)
        sigma_next = _per_sample(self.sigma, index + 1, x)
        return stepping.flow_sde_mean_std(x.float(), out.float(), sigma, sigma_next, eta)

    def ode(self, x: Tensor, out: Tensor, i: int | Tensor) -> Tensor:
        index = torch.as_tensor(i, dtype=torch.long)
        sigma = _per_sample(self.sigma, index, x)
        sigma_next = _per_sample(self.sigma, index + 1, x)
        return stepping.flow_ode_step(x.float(), out.float(), sigma, sigma_next)

    def predicted_x0(self, x: Tensor, out: Tensor, i: int | Tensor) -> Tensor:
        sigma = _per_sample(self.sigma, i, x)
        return stepping.flow_predicted_x0(x.float(), out.float(), sigma)


class DDIMSchedule(Schedule):
    """Epsilon prediction with DDIM steps (SD1.5 family): scaled-linear betas, leading spacing.

    The final step lands on alphas_cumprod[0] rather than 1 (diffusers' set_alpha_to_one=False,
    as SD1.5 ships), which keeps the last SDE step's std above zero.
    """

    family: Family = "epsilon"

    def __init__(
        self,
        steps: int,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        steps_offset: int = 1,
        alphas_cumprod: Tensor | None = None,
    ) -> None:
        if alphas_cumprod is None:
            betas = (
                torch.linspace(
                    beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64
                )
                ** 2
            )
            alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        alphas_cumprod = alphas_cumprod.to(torch.float64)
        if steps > num_train_timesteps - steps_offset:
            # Beyond this, two steps share a timestep and the SDE std of that step is 0.
            raise ValueError(
                f"DDIM with {num_train_timesteps} training timesteps takes at most "
                f"{num_train_timesteps - steps_offset} steps, got {steps}"
            )
        stride = num_train_timesteps // steps
        timesteps = (torch.arange(steps - 1, -1, -1) * stride + steps_offset).clamp(
            max=num_train_timesteps - 1
        )  # (T,) high to low
        previous = timesteps - stride
        alpha = alphas_cumprod[timesteps]
        alpha_prev = torch.where(
            previous >= 0, alphas_cumprod[previous.clamp(min=0)], alphas_cumprod[0]
        )
        self.steps = steps
        self.timesteps = timesteps  # (T,) long
        self.alpha = torch.cat([alpha, alpha_prev[-1:]]).to(torch.float32)  # (T + 1,) per state
        self.t = torch.cat([timesteps.double(), torch.zeros(1, dtype=torch.float64)]).float()
        self.sigma = torch.sqrt((1.0 - self.alpha) / self.alpha)  # (T + 1,) VE-equivalent sigma
        self.sigma[-1] = 0.0

    def model_timesteps(self, i: int | Tensor, batch: int) -> Tensor:
        index = torch.as_tensor(i, dtype=torch.long).cpu()
        return self.timesteps[index].expand(batch) if index.ndim == 0 else self.timesteps[index]

    def gaussian(
        self, x: Tensor, out: Tensor, i: int | Tensor, eta: float
    ) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(i, dtype=torch.long)
        alpha_t = _per_sample(self.alpha, index, x)
        alpha_prev = _per_sample(self.alpha, index + 1, x)
        return stepping.ddim_mean_std(x.float(), out.float(), alpha_t, alpha_prev, eta)

    def ode(self, x: Tensor, out: Tensor, i: int | Tensor) -> Tensor:
        index = torch.as_tensor(i, dtype=torch.long)
        alpha_t = _per_sample(self.alpha, index, x)
        alpha_prev = _per_sample(self.alpha, index + 1, x)
        mean, _ = stepping.ddim_mean_std(x.float(), out.float(), alpha_t, alpha_prev, 0.0)
        return mean

    def predicted_x0(self, x: Tensor, out: Tensor, i: int | Tensor) -> Tensor:
        alpha_t = _per_sample(self.alpha, i, x)
        return stepping.ddim_predicted_x0(x.float(), out.float(), alpha_t)
