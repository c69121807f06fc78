"""The model-adapter interface the rollout and trainer talk to.

An adapter bundles a text encoder, a denoiser (the trained module), a step schedule and a decoder:

    cond   = adapter.encode_prompts(["a photo of a cat"])   # Conditioning, batch-first
    sched  = adapter.make_schedule(steps=10)                 # from the model's own scheduler
    out    = adapter.predict(x, i, sched, cond, cfg_scale)   # CFG: cond and uncond in one call
    images = adapter.decode(x0)                              # (B, C, H, W) in [0, 1]

Flow adapters predict velocity, epsilon adapters predict noise; the schedule knows which.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from treegrpo.config import DEFAULT_CFG_SCALE, ConfigError
from treegrpo.grids import Grid, build_schedule
from treegrpo.schedules import Family, FlowSDE, Schedule


@dataclass
class Conditioning:
    """Batch-first tensors that condition the denoiser (token states, pooled embeddings, ...)."""

    tensors: dict[str, Tensor]

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def select(self, index: Tensor) -> Conditioning:
        """Rows `index` (LongTensor) of every tensor, e.g. to give each tree node its prompt."""
        return Conditioning(
            {k: v.index_select(0, index.to(v.device)) for k, v in self.tensors.items()}
        )

    def expand(self, n: int) -> Conditioning:
        """A single-row conditioning repeated n times (used for the unconditional prompt)."""
        return Conditioning({k: v.expand(n, *v.shape[1:]) for k, v in self.tensors.items()})

    @staticmethod
    def cat(parts: Sequence[Conditioning]) -> Conditioning:
        keys = parts[0].tensors.keys()
        return Conditioning({k: torch.cat([p.tensors[k] for p in parts]) for k in keys})


class ModelAdapter(ABC):
    """What TreeGRPO needs from a text-to-image model."""

    family: Family
    latent_shape: tuple[int, ...]  # (C, H, W) of one latent
    denoiser: nn.Module  # the module the policy update trains
    device: torch.device
    dtype: torch.dtype  # of the denoiser's inputs; step math stays float32
    name: str
    # Mixed precision: run the denoiser under torch.autocast in this dtype (e.g. bf16 on a GPU
    # with float32 master weights); None = plain `dtype` arithmetic.
    autocast_dtype: torch.dtype | None = None
    # The model's diffusers scheduler config (scheduler/scheduler_config.json of a folder);
    # None = the family's default (grids.DEFAULT_FLOW_CONFIG / DEFAULT_DDIM_CONFIG).
    scheduler_config: dict[str, Any] | None = None
    # The CFG scale a config's null `sampling.cfg_scale` means for this model (1 = one call).
    default_cfg_scale: float = DEFAULT_CFG_SCALE
    # The denoiser's component name in its diffusers pipeline ("transformer", "unet"): the key
    # prefix of an exported LoRA (treegrpo.export). None: the model has no diffusers export.
    export_prefix: str | None = None

    def image_seq_len(self) -> int | None:
        """Latent tokens per image, for schedulers with dynamic shifting; None if not a DiT."""
        return None

    def make_schedule(
        self, steps: int, grid: Grid = "model", sde: FlowSDE = "flowgrpo"
    ) -> Schedule:
        """The step schedule this model samples with for T = steps: its own scheduler's grid
        (or DanceGRPO's, `grid="dancegrpo"`), stepping with the flow SDE `sde`."""
        return build_schedule(
            self.family, self.scheduler_config, steps, grid, sde, self.image_seq_len()
        )

    @abstractmethod
    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        """Text -> conditioning, on self.device."""

    @abstractmethod
    def denoise(
        self, x: Tensor, timesteps: Tensor, cond: Conditioning, denoiser: nn.Module | None = None
    ) -> Tensor:
        """One raw denoiser call (no guidance). `denoiser` overrides the policy (reference)."""

    @abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """Clean latents -> images (B, C, H, W), float32 in [0, 1]."""

    def unconditional(self) -> Conditioning:
        """Conditioning of the empty prompt, computed once."""
        cached: Conditioning | None = getattr(self, "_uncond_cache", None)
        if cached is None:
            cached = self.encode_prompts([""])
            self._uncond_cache = cached
        return cached

    def predict(
        self,
        x: Tensor,
        step: int | Tensor,
        schedule: Schedule,
        cond: Conditioning,
        cfg_scale: float,
        denoiser: nn.Module | None = None,
    ) -> Tensor:
        """Guided model output at step(s) `step`, float32. Cond and uncond share one call."""
        batch = x.shape[0]
        timesteps = schedule.model_timesteps(step, batch).to(self.device)
        x_in = x.to(device=self.device, dtype=self.dtype)
        with torch.autocast(
            device_type=self.device.type,
            dtype=self.autocast_dtype or torch.bfloat16,
            enabled=self.autocast_dtype is not None,
        ):
            if cfg_scale == 1.0:
                return self.denoise(x_in, timesteps, cond, denoiser).float()
            both = Conditioning.cat([cond, self.unconditional().expand(batch)])
            out = self.denoise(
                torch.cat([x_in, x_in]), torch.cat([timesteps, timesteps]), both, denoiser
            ).float()
        out_cond, out_uncond = out.chunk(2)  # (B, C, H, W) each
        return out_uncond + cfg_scale * (out_cond - out_uncond)

    def initial_noise(self, n: int, generator: torch.Generator) -> Tensor:
        """(n, C, H, W) standard Gaussian latents, drawn on the CPU so seeds match across devices."""
        return torch.randn((n, *self.latent_shape), generator=generator).to(self.device)

    def enable_lora(self, rank: int, seed: int = 0) -> None:
        """Freeze the denoiser and train rank-`rank` LoRA adapters instead (train.lora_rank),
        their random initial values drawn from `seed` only (never from the global RNG)."""
        raise ConfigError("train.lora_rank", f"model {self.name!r} does not support LoRA")

    def enable_gradient_checkpointing(self) -> None:
        """Trade compute for activation memory in the update (train.grad_checkpointing)."""
        raise ConfigError("train.grad_checkpointing", f"model {self.name!r} does not support it")

    def compile_denoiser(self) -> None:
        """torch.compile the denoiser in place (train.compile). Dynamic shapes: tree rollouts
        call it with many batch sizes. Its parameter names stay, so checkpoints are unchanged."""
        self.denoiser.compile(dynamic=True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.denoiser.parameters() if p.requires_grad]
