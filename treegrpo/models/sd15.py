"""SD1.5-family adapter: a diffusers `UNet2DConditionModel` predicting noise (epsilon), conditioned
on CLIP token states, sampled with DDIM steps on the model's own training noise schedule.

The adapter takes its text encoder and decoder as callables, like `SD3StyleAdapter`; loading a
local folder into one lives in `treegrpo.models.local`. `alphas_cumprod_from_config` turns a
diffusers scheduler config (any scheduler class: SD1.5 ships PNDM's) into the cumulative alphas
the DDIM schedule steps on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from treegrpo.models.base import Conditioning
from treegrpo.models.diffusers_adapter import DiffusersAdapter
from treegrpo.schedules import DDIMSchedule, Family, Schedule

if TYPE_CHECKING:
    from diffusers import UNet2DConditionModel

# Token states (B, L, D) for a batch of prompts; SD1.5 has no pooled embedding.
TokenEncoderFn = Callable[[Sequence[str]], Tensor]
DecoderFn = Callable[[Tensor], Tensor]


def alphas_cumprod_from_config(config: Mapping[str, Any]) -> Tensor:
    """(num_train_timesteps,) float64 cumulative alphas from a diffusers scheduler config.

    Symbols as in DDPM (Ho et al. 2020, eq. 4): beta_t the per-step noise variance,
    alpha_t = 1 - beta_t, alpha_bar_t = prod_{s <= t} alpha_s (`alphas_cumprod`).
    """
    steps = int(config.get("num_train_timesteps", 1000))
    trained = config.get("trained_betas")
    schedule = config.get("beta_schedule", "linear")
    beta_start = float(config.get("beta_start", 0.0001))
    beta_end = float(config.get("beta_end", 0.02))
    # 1. betas: explicit, linear in beta, or linear in sqrt(beta) ("scaled_linear", SD1.5's).
    if trained is not None:
        betas = torch.tensor(trained, dtype=torch.float64)
        if betas.numel() != steps:
            raise ValueError(
                f"scheduler config lists {betas.numel()} trained_betas for {steps} timesteps"
            )
    elif schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    else:
        raise ValueError(
            f"scheduler beta_schedule {schedule!r} is not supported: expected scaled_linear or "
            "linear (or trained_betas)"
        )
    # 2. alpha_bar_t = prod (1 - beta_s)
    return torch.cumprod(1.0 - betas, dim=0)


class SD15Adapter(DiffusersAdapter):
    """UNet epsilon-prediction model with DDIM steps. The UNet is the policy; text encoder and
    decoder are frozen callables. With `autocast_dtype` set, the UNet keeps float32 master
    weights and its forward runs under autocast in that dtype."""

    family: Family = "epsilon"
    # Every attention of the UNet (self- and cross-attention in each transformer block).
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")

    def __init__(
        self,
        name: str,
        unet: UNet2DConditionModel,
        encode_text: TokenEncoderFn,
        decode: DecoderFn,
        latent_shape: tuple[int, ...],
        device: torch.device,
        alphas_cumprod: Tensor,
        num_train_timesteps: int = 1000,
        steps_offset: int = 1,
        dtype: torch.dtype = torch.float32,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.name = name
        self.denoiser = unet
        self.encode_text = encode_text
        self.decode_fn = decode
        self.latent_shape = latent_shape
        self.device = device
        self.dtype = dtype
        self.autocast_dtype = autocast_dtype
        self.alphas_cumprod = alphas_cumprod
        self.num_train_timesteps = num_train_timesteps
        self.steps_offset = steps_offset

    def make_schedule(self, steps: int) -> Schedule:
        return DDIMSchedule(
            steps,
            num_train_timesteps=self.num_train_timesteps,
            steps_offset=self.steps_offset,
            alphas_cumprod=self.alphas_cumprod,
        )

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        tokens = self.encode_text(prompts)  # (B, L, D)
        return Conditioning({"encoder_hidden_states": tokens.to(self.device, self.dtype)})

    def denoise(
        self, x: Tensor, timesteps: Tensor, cond: Conditioning, denoiser: nn.Module | None = None
    ) -> Tensor:
        module = denoiser if denoiser is not None else self.denoiser
        out: Tensor = module(
            x,
            timesteps,
            encoder_hidden_states=cond.tensors["encoder_hidden_states"],
            return_dict=False,
        )[0]
        return out
