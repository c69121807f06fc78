"""Model names -> adapters. Built-in names load without any files; folders load from disk."""

from __future__ import annotations

from pathlib import Path

import torch

from treegrpo.config import ConfigError
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
    if name in ("digits", "digits-ddim"):
        from treegrpo.models.digits import load_digits_model

        try:
            return load_digits_model(name, torch_device, torch_dtype)
        except FileNotFoundError as exc:
            raise ConfigError("model", str(exc)) from exc
    if "/" in name or name.startswith("."):
        # Checked before the import: loading diffusers takes seconds, a typo should not.
        if not Path(name).expanduser().is_dir():
            raise ConfigError(
                "model",
                f"folder {name!r} does not exist: expected a local diffusers pipeline "
                "folder (SD3 or SD1.5 family, written by save_pretrained)",
            )
        from treegrpo.models.local import load_local_model

        try:
            return load_local_model(name, torch_device, torch_dtype)
        except ValueError as exc:  # the loader names the folder and what it expected
            raise ConfigError("model", str(exc)) from exc
    raise ConfigError(
        "model",
        f"unknown model {name!r}: use digits, digits-ddim, tiny-random, tiny-random-ddim or a "
        "local folder",
    )
