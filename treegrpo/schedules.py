"""Step schedules: which noise level each of the T steps sits at, and how to take a step there.

A schedule owns the per-step constants (sigmas or cumulative alphas) and turns a model output
into the Gaussian (mean, std) of an SDE step, a deterministic ODE step, or the predicted clean
sample, by calling `stepping`. Indices `i` are step numbers 0..T-1 (0 = pure noise), given as an
int or a LongTensor (B,) so one batch may mix steps, as the update does.

The constants themselves come from the model's diffusers scheduler (`treegrpo.grids`); this
module only steps on them. A flow schedule also carries which SDE it samples with (`sde`:
Flow-GRPO's or DanceGRPO's), so rollout and training can never disagree about it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor

from treegrpo import stepping

Family = Literal["flow", "epsilon"]
FlowSDE = Literal["flowgrpo", "dancegrpo"]
FLOW_SDES = ("flowgrpo", "dancegrpo")


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

    def step_std(self, i: int, eta: float) -> float:
        """The std of the stochastic step from state i (the same for every sample: it depends
        only on the step's noise levels, so a zero state and output probe it)."""
        probe = torch.zeros(1, 1)
        _, std = self.gaussian(probe, probe, i, eta)
        return float(std.reshape(-1)[0])

    @abstractmethod
    def kl_scale(self, std: Tensor, i: int | Tensor) -> Tensor:
        """Flow-GRPO's KL denominator scale for a step whose Gaussian std is `std`.

        Flow-GRPO divides the squared mean difference by 2 sigma_t^2, the SDE's noise scale
        without the step length (flow_grpo issue #78); the exact Gaussian KL divides by
        2 std^2. For DDIM the two are the same.
        """

    def check_stochastic(self, steps: Iterable[int], eta: float) -> None:
        """A ValueError naming any of `steps` whose SDE step has no noise (its log-prob would
        be NaN), so a misconfigured scheduler fails before a rollout rather than in a loss."""
        dead = [i for i in steps if not self.step_std(i, eta) > 0.0]
        if dead:
            raise ValueError(
                f"steps {dead} of this {self.steps}-step {self.describe()} have zero SDE noise, so "
                f"their log-probabilities are undefined (NaN). {self.zero_noise_hint()}"
            )

    def describe(self) -> str:
        return f"{self.family} schedule"

    def zero_noise_hint(self) -> str:
        return "Use more distinct noise levels (fewer steps) or a different grid."


class FlowMatchSchedule(Schedule):
    """Rectified flow (SD3 / FLUX families): sigmas fall from 1 to 0, the model predicts velocity.

    `sigmas` (T + 1,) end with 0 and `timesteps` (T,) are what the denoiser is fed, both as
    diffusers' FlowMatchEulerDiscreteScheduler.set_timesteps makes them (`grids.flow_schedule`).
    `sde` picks the stochastic step: Flow-GRPO's (docs/TREEGRPO.md §4) or DanceGRPO's (§7.1).
    """

    family: Family = "flow"

    def __init__(self, sigmas: Tensor, timesteps: Tensor, sde: FlowSDE = "flowgrpo") -> None:
        if sigmas.ndim != 1 or timesteps.shape != (sigmas.shape[0] - 1,):
            raise ValueError(
                f"need sigmas (T + 1,) and timesteps (T,), got {tuple(sigmas.shape)} and "
                f"{tuple(timesteps.shape)}"
            )
        if sde not in FLOW_SDES:
            raise ValueError(f"unknown flow SDE {sde!r}; known: {', '.join(FLOW_SDES)}")
        self.steps = int(timesteps.shape[0])
        self.sde = sde
        self.sigma = sigmas.detach().to("cpu", torch.float32)  # (T + 1,)
        self.timesteps = timesteps.detach().to("cpu", torch.float32)  # (T,)
        self.t = torch.cat([self.timesteps, torch.zeros(1)])  # (T + 1,)

    def model_timesteps(self, i: int | Tensor, batch: int) -> Tensor:
        # The tables live on the CPU; the update passes per-row steps that may sit on a GPU.
        index = torch.as_tensor(i, dtype=torch.long).cpu()
        return self.timesteps[index].expand(batch) if index.ndim == 0 else self.timesteps[index]

    def _sigmas(self, x: Tensor, i: int | Tensor) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(i, dtype=torch.long)
        return _per_sample(self.sigma, index, x), _per_sample(self.sigma, index + 1, x)

    def gaussian(
        self, x: Tensor, out: Tensor, i: int | Tensor, eta: float
    ) -> tuple[Tensor, Tensor]:
        sigma, sigma_next = self._sigmas(x, i)
        step = (
            stepping.flow_sde_mean_std
            if self.sde == "flowgrpo"
            else stepping.dancegrpo_sde_mean_std
        )
        return step(x.float(), out.float(), sigma, sigma_next, eta)

    def ode(self, x: Tensor, out: Tensor, i: int | Tensor) -> Tensor:
        sigma, sigma_next = self._sigmas(x, i)
        return stepping.flow_ode_step(x.float(), out.float(), sigma, sigma_next)

    def predicted_x0(self, x: Tensor, out: Tensor, i: int | Tensor) -> Tensor:
        sigma = _per_sample(self.sigma, i, x)
        return stepping.flow_predicted_x0(x.float(), out.float(), sigma)

    def kl_scale(self, std: Tensor, i: int | Tensor) -> Tensor:
        index = torch.as_tensor(i, dtype=torch.long).cpu()
        step = (self.sigma[index] - self.sigma[index + 1]).to(std.device)  # (B,) or ()
        return std / step.reshape(-1, *([1] * (std.ndim - 1))).sqrt()

    def describe(self) -> str:
        return f"flow-matching schedule (sigmas {[round(float(s), 4) for s in self.sigma]})"


class DDIMSchedule(Schedule):
    """Epsilon prediction with DDIM steps (SD1.5 family) on diffusers' DDIMScheduler grid.

    `timesteps` (T,) fall from high to low as DDIMScheduler.set_timesteps makes them (its
    `timestep_spacing` and `steps_offset`); the step from timestep t lands on t - N // T (N =
    training timesteps), or on `final_alpha_cumprod` below 0 (1 with `set_alpha_to_one`, else
    alphas_cumprod[0], which keeps the last SDE step's std above zero), exactly as
    DDIMScheduler.step does.
    """

    family: Family = "epsilon"

    def __init__(
        self,
        timesteps: Tensor,
        alphas_cumprod: Tensor,
        final_alpha_cumprod: float,
        num_train_timesteps: int,
    ) -> None:
        steps = int(timesteps.shape[0])
        timesteps = timesteps.detach().to("cpu", torch.long)
        alphas_cumprod = alphas_cumprod.detach().to("cpu", torch.float64)
        previous = timesteps - num_train_timesteps // steps  # (T,) diffusers' prev_timestep
        alpha = alphas_cumprod[timesteps]
        alpha_prev = torch.where(
            previous >= 0,
            alphas_cumprod[previous.clamp(min=0)],
            torch.tensor(float(final_alpha_cumprod), dtype=torch.float64),
        )
        self.steps = steps
        self.timesteps = timesteps  # (T,) long
        self.alpha = alpha.to(torch.float32)  # (T,) alpha_bar at each step's state
        self.alpha_prev = alpha_prev.to(torch.float32)  # (T,) alpha_bar the step lands on
        self.t = torch.cat([timesteps.double(), torch.zeros(1, dtype=torch.float64)]).float()
        state_alpha = torch.cat([self.alpha, self.alpha_prev[-1:]])  # (T + 1,)
        self.sigma = torch.sqrt((1.0 - state_alpha) / state_alpha)  # (T + 1,) VE-equivalent
        self.sigma[-1] = 0.0

    def model_timesteps(self, i: int | Tensor, batch: int) -> Tensor:
        index = torch.as_tensor(i, dtype=torch.long).cpu()
        return self.timesteps[index].expand(batch) if index.ndim == 0 else self.timesteps[index]

    def _alphas(self, x: Tensor, i: int | Tensor) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(i, dtype=torch.long)
        return _per_sample(self.alpha, index, x), _per_sample(self.alpha_prev, index, x)

    def gaussian(
        self, x: Tensor, out: Tensor, i: int | Tensor, eta: float
    ) -> tuple[Tensor, Tensor]:
        alpha_t, alpha_prev = self._alphas(x, i)
        return stepping.ddim_mean_std(x.float(), out.float(), alpha_t, alpha_prev, eta)

    def ode(self, x: Tensor, out: Tensor, i: int | Tensor) -> Tensor:
        alpha_t, alpha_prev = self._alphas(x, i)
        mean, _ = stepping.ddim_mean_std(x.float(), out.float(), alpha_t, alpha_prev, 0.0)
        return mean

    def predicted_x0(self, x: Tensor, out: Tensor, i: int | Tensor) -> Tensor:
        alpha_t = _per_sample(self.alpha, i, x)
        return stepping.ddim_predicted_x0(x.float(), out.float(), alpha_t)

    def kl_scale(self, std: Tensor, i: int | Tensor) -> Tensor:
        return std

    def describe(self) -> str:
        return f"DDIM schedule (timesteps {self.timesteps.tolist()})"

    def zero_noise_hint(self) -> str:
        return (
            "A DDIM step whose timestep and the one it lands on share a cumulative alpha has no "
            "noise: with steps_offset 0 the last step runs from timestep 0 onto alphas_cumprod[0] "
            "(set steps_offset: 1 in the model's scheduler/scheduler_config.json, as SD1.5 "
            "ships), and with set_alpha_to_one a step onto alpha 1 is deterministic too."
        )
