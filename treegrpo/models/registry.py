"""Model names -> adapters. Built-in names load without any files; folders and hub ids from the
local cache load from disk."""

from __future__ import annotations

import torch

from treegrpo.config import ConfigError, RunConfig
from treegrpo.hub import local_folder
from treegrpo.models.base import ModelAdapter
from treegrpo.models.sizes import BUILTIN_SIZES, fixed_size
from treegrpo.models.tiny import TinyAdapter

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else the CPU; explicit CUDA without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but no CUDA device is available")
    return torch.device(name)


def load_model(
    name: str,
    device: str = "auto",
    dtype: str = "float32",
    size: tuple[int | None, int | None] = (None, None),
    guidance: float | None = None,
    empty_denoiser: bool = False,
) -> ModelAdapter:
    """Build the adapter a config's `model` names: a built-in name, a local diffusers pipeline
    folder, or a hub id (`ORG/NAME[@REVISION]`) in the local Hugging Face cache. `size` is
    (sampling.height, sampling.width), `guidance` sampling.guidance (FLUX only).
    `empty_denoiser`: the denoiser's architecture on the meta device, no weights read (a sharded
    run's ranks > 0, filled from rank 0 by `sharding.fill_shards`)."""
    torch_device = resolve_device(device)
    torch_dtype = TORCH_DTYPES[dtype]
    builtin = BUILTIN_SIZES.get(name)
    if builtin is not None:
        fixed_size(name, size, builtin)
        if guidance is not None:
            raise ConfigError("sampling.guidance", f"model {name!r} has no guidance embedding")
    if name == "tiny-random":
        return TinyAdapter("flow", device=torch_device, dtype=torch_dtype, empty=empty_denoiser)
    if name == "tiny-random-ddim":
        return TinyAdapter("epsilon", device=torch_device, dtype=torch_dtype, empty=empty_denoiser)
    if name in ("digits", "digits-ddim"):
        from treegrpo.models.digits import load_digits_model

        try:
            return load_digits_model(name, torch_device, torch_dtype, empty=empty_denoiser)
        except FileNotFoundError as exc:
            raise ConfigError("model", str(exc)) from exc
    if "/" in name or name.startswith((".", "~")):
        # Resolved before the import: loading diffusers takes seconds, a typo should not.
        folder = local_folder(
            "model", name, "a diffusers pipeline folder of the SD3, FLUX.1 or SD1.5 family"
        )
        from treegrpo.models.local import load_local_model

        try:
            return load_local_model(
                folder, torch_device, torch_dtype, size, guidance, empty_denoiser
            )
        except ConfigError:
            raise
        except ValueError as exc:  # the loader names the folder and what it expected
            raise ConfigError("model", str(exc)) from exc
    raise ConfigError(
        "model",
        f"unknown model {name!r}: use digits, digits-ddim, tiny-random, tiny-random-ddim, a "
        "local diffusers folder (SD3, FLUX.1 or SD1.5 family) or a hub id ORG/NAME in the "
        "local Hugging Face cache",
    )


def load_model_for(
    config: RunConfig,
    device: str | None = None,
    model: str | None = None,
    empty_denoiser: bool = False,
) -> ModelAdapter:
    """The adapter of a run: `config.model` (or `model`) at the run's image size and guidance,
    on `device` (default config.device) in config.dtype. `empty_denoiser`: see `load_model`
    (`sharding.loads_empty_denoiser` says which ranks of a run load it so)."""
    sampling = config.sampling
    return load_model(
        model or config.model,
        device or config.device,
        config.dtype,
        (sampling.height, sampling.width),
        sampling.guidance,
        empty_denoiser=empty_denoiser,
    )
