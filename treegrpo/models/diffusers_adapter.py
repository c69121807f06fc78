"""What the diffusers-backed adapters (SD3, SD1.5 and FLUX.1 families) share: one constructor,
text encoding and decoding through callables, peft LoRA on the denoiser's attention projections,
and gradient checkpointing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypedDict, TypeVar

import torch
from torch import Tensor, nn

from treegrpo.models.base import ModelAdapter
from treegrpo.schedules import Family

# What a family's text encoder returns for a batch of prompts: token states, or (states, pooled).
TextT = TypeVar("TextT")
DecoderFn = Callable[[Tensor], Tensor]


class AdapterOptions(TypedDict, total=False):
    """The keyword arguments of `DiffusersAdapter.__init__`, for subclasses that pass them on."""

    family: Family | None
    dtype: torch.dtype
    scheduler_config: dict[str, Any] | None
    autocast_dtype: torch.dtype | None


def mixed_precision(dtype: torch.dtype) -> torch.dtype | None:
    """The autocast dtype of a denoiser whose run asks for `dtype`: None (plain float32
    arithmetic) for float32. The denoiser keeps float32 master weights and float32 inputs either
    way; only its matmuls run lower."""
    return None if dtype == torch.float32 else dtype


def add_lora(
    module: nn.Module,
    rank: int,
    targets: Sequence[str],
    base_dtype: torch.dtype | None,
    seed: int = 0,
) -> None:
    """Adapters of rank `rank` (alpha = rank) on the named projections of `module`, their
    initial values drawn from `seed`.

    peft draws its Gaussian lora_A (std 1 / rank; lora_B starts at zero, dropout is off) from
    the global RNG of the module's device, unseeded in a fresh process, so same-seed runs used to
    start from different adapters (issue 15). Here lora_A is drawn again, in parameter order,
    from a CPU generator seeded with `seed` (the same values on any device, as peft's "gaussian"
    init), and peft's own draw runs under a forked RNG so the caller's RNG state is untouched.

    With mixed precision (`base_dtype` = the autocast dtype) the frozen base is stored in that
    dtype: its matmuls run there under autocast anyway, and it halves the base's memory.
    """
    from peft import LoraConfig

    if base_dtype is not None:
        # torch's own `to`: diffusers' override warns about float32-pinned modules even when a
        # model has none, as SD3's transformer and the SD1.5 UNet do.
        nn.Module.to(module, base_dtype)
    module.requires_grad_(False)
    device = next(module.parameters()).device
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        module.add_adapter(  # type: ignore[operator]
            LoraConfig(
                r=rank,
                lora_alpha=rank,
                lora_dropout=0.0,
                init_lora_weights="gaussian",
                target_modules=list(targets),
            )
        )
    generator = torch.Generator().manual_seed(seed)
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        # peft creates the adapters in the base's dtype; they train with float32 weights.
        param.data = param.data.float()
        if ".lora_A." in name:
            draw = torch.randn(param.shape, generator=generator) / rank  # (rank, in_features)
            param.data.copy_(draw.to(param.device))


class DiffusersAdapter(ModelAdapter, Generic[TextT]):
    """Base for adapters whose denoiser is a diffusers model and whose text encoder and decoder
    are callables: a loaded folder's frozen components, or the digits model's MiniLM and pixels.

    `family` None keeps the class's own (SD1.5: epsilon; SD3 and FLUX: flow); the digits model
    passes "epsilon" to run its SD3 transformer as a noise predictor.
    """

    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")

    def __init__(
        self,
        name: str,
        denoiser: nn.Module,
        encode_text: Callable[[Sequence[str]], TextT],
        decode: DecoderFn,
        latent_shape: tuple[int, ...],
        device: torch.device,
        *,
        family: Family | None = None,
        dtype: torch.dtype = torch.float32,
        scheduler_config: dict[str, Any] | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.name = name
        if family is not None:
            self.family = family
        self.denoiser = denoiser
        self.encode_text = encode_text
        self.decode_fn = decode
        self.latent_shape = latent_shape
        self.device = device
        self.dtype = dtype
        self.scheduler_config = scheduler_config
        self.autocast_dtype = autocast_dtype

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        return self.decode_fn(latents).float().clamp(0.0, 1.0).cpu()

    def enable_lora(self, rank: int, seed: int = 0) -> None:
        """peft LoRA on the attention projections, initialised from `seed`; only the adapters
        train."""
        add_lora(self.denoiser, rank, self.lora_targets, self.autocast_dtype, seed)

    def enable_gradient_checkpointing(self) -> None:
        self.denoiser.enable_gradient_checkpointing()  # type: ignore[operator]
