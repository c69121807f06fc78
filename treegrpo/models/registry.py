"""Model names -> adapters. Built-in names load without any files; folders load from disk."""

from __future__ import annotations

import torch

from treegrpo.models.base import ModelAdapter
from treegrpo.models.tiny import TinyAdapter

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else the CPU; explicit CUDA without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but no CUDA device is available")
    return torch.device(name)


def load_model(name: str, device: str = "auto", dtype: str = "float32") -> ModelAdapter:
    """Build the adapter a config's `model` names."""
    torch_device = resolve_device(device)
    torch_dtype = TORCH_DTYPES[dtype]
    if name == "tiny-random":
        return TinyAdapter("flow", device=torch_device, dtype=torch_dtype)
    if name == "tiny-random-ddim":
        return TinyAdapter("epsilon", device=torch_device, dtype=torch_dtype)
    raise ValueError(
        f"model {name!r} cannot be loaded by this build: available are tiny-random and "
        "tiny-random-ddim (the digits model and local SD3/SD1.5 folders come with their loaders)"
    )
