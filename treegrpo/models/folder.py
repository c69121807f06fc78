"""What every family's loader shares when it reads a local diffusers pipeline folder: the folder's
JSON files, checked before any weights load, and the loading of its components, never from the
network (local_files_only=True, so a missing file is an error rather than a download).

A folder is what `pipeline.save_pretrained(path)` writes (a hub snapshot copied to disk has the
same layout): a model_index.json whose `_class_name` names the pipeline, and one subfolder per
component. The families' loaders are `load_sd3` (models/sd3.py), `load_sd15` (models/sd15.py)
and `load_flux` (models/flux.py); `treegrpo.models.local` picks one.

The model libraries are imported where a folder is loaded, not at import: the family modules
also hold the adapters, which the digits model uses without any folder, and importing
transformers' and diffusers' model classes takes seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, PreTrainedTokenizerBase

DECODE_BATCH = 8  # VAE decodes at full resolution: bound the activation memory of one call

ModuleT = TypeVar("ModuleT", bound=nn.Module)
Size = tuple[int | None, int | None]  # requested (sampling.height, sampling.width); None = default


# -- the folder's JSON files ---------------------------------------------------------------------


def read_model_index(folder: Path) -> dict[str, Any]:
    """model_index.json of a pipeline folder, or a ValueError saying what was expected."""
    expected = "a diffusers pipeline folder (written by save_pretrained) with a model_index.json"
    if not folder.is_dir():
        raise ValueError(f"model folder {str(folder)!r} does not exist: expected {expected}")
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ValueError(
            f"model folder {str(folder)!r} has no model_index.json: expected {expected}"
        )
    try:
        index = json.loads(index_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(index_file)!r} is not valid JSON ({error})") from error
    if not isinstance(index, dict):
        raise ValueError(f"{str(index_file)!r} must hold a JSON object")
    return index


def has_component(index: dict[str, Any], name: str) -> bool:
    """Whether model_index.json lists `name` as present (absent ones read `[null, null]`)."""
    entry = index.get(name)
    return isinstance(entry, list) and len(entry) == 2 and None not in entry


def require_components(folder: Path, index: dict[str, Any], names: Sequence[str]) -> None:
    for name in names:
        if not has_component(index, name) or not (folder / name).is_dir():
            raise ValueError(
                f"model folder {str(folder)!r} lacks the component {name!r}: expected it listed "
                f"in model_index.json and a {name}/ subfolder"
            )


def scheduler_config(folder: Path) -> dict[str, Any]:
    """The scheduler's config as a dict; the scheduler object itself is never built."""
    path = folder / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        raise ValueError(f"model folder {str(folder)!r} has no scheduler/scheduler_config.json")
    config = json.loads(path.read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object")
    return config


def image_size(sample_size: int | Sequence[int]) -> tuple[int, int]:
    """A config's `sample_size` (an int, or (height, width)) as (height, width)."""
    if isinstance(sample_size, int):
        return sample_size, sample_size
    height, width = sample_size
    return int(height), int(width)


def component_config(folder: Path, name: str) -> dict[str, Any]:
    """`name`/config.json of a pipeline folder, read before any weights load."""
    path = folder / name / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(
            f"model folder {str(folder)!r}: cannot read {name}/config.json ({error})"
        ) from error
    if not isinstance(config, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object")
    return config


def require_class(folder: Path, name: str, config: dict[str, Any], expected: str) -> None:
    """A component saved by another class (say an SD3 transformer in a FluxPipeline folder) is
    named plainly instead of failing deep inside from_pretrained on a weight shape."""
    found = config.get("_class_name")
    if found is not None and found != expected:
        raise ValueError(
            f"model folder {str(folder)!r}: {name}/ holds a {found!r}, expected {expected!r} "
            "for the pipeline named in model_index.json"
        )


def vae_scale_factor(vae_config: dict[str, Any]) -> int:
    """Pixels per latent cell, as the diffusers pipelines compute it."""
    return int(2 ** (len(vae_config.get("block_out_channels", [0, 0, 0, 0])) - 1))


# -- the components --------------------------------------------------------------------------------


def frozen(module: ModuleT, device: torch.device) -> ModuleT:
    """Inference-only: no gradients, eval mode (no dropout), on `device`."""
    module.requires_grad_(False)
    module.eval()
    module.to(device)
    return module


def load_frozen(
    load: Callable[..., ModuleT], folder: Path, name: str, dtype: torch.dtype, device: torch.device
) -> ModuleT:
    """A component that never trains (a text encoder, the VAE), stored in `dtype`."""
    return frozen(load(folder / name, dtype=dtype, local_files_only=True), device)


def load_denoiser(
    model_class: Any, folder: Path, name: str, device: torch.device, empty: bool = False
) -> Any:
    """The trained denoiser, in float32 master weights whatever the run's dtype: autocast lowers
    its matmuls (`mixed_precision`), and `enable_lora` may store its frozen base lower.

    `empty`: the architecture from its config.json on the meta device, with no weights read, for
    the ranks > 0 of a sharded run: rank 0 loads the weights and broadcasts them into the
    shards (`sharding.fill_shards`), so N ranks never hold N full copies in host memory.
    """
    if empty:
        with torch.device("meta"):
            denoiser = model_class.from_config(
                model_class.load_config(folder / name, local_files_only=True)
            )
        return denoiser
    denoiser = model_class.from_pretrained(
        folder / name, dtype=torch.float32, local_files_only=True
    )
    denoiser.to(device)
    return denoiser


def load_tokenizer(folder: Path, name: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder / name), local_files_only=True)
    if tokenizer is None:
        raise ValueError(f"model folder {str(folder)!r}: {name}/ holds no usable tokenizer")
    return tokenizer


def token_ids(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], length: int, device: torch.device
) -> Tensor:
    """(B, length) ids, padded and truncated to `length` as the diffusers pipelines do."""
    batch = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=length,
        truncation=True,
        return_tensors="pt",
    )
    ids: Tensor = batch["input_ids"]
    return ids.to(device)


def clip_length(
    tokenizer: PreTrainedTokenizerBase, encoder: CLIPTextModel | CLIPTextModelWithProjection
) -> int:
    """Tokens per prompt: the tokenizer's limit (77 for CLIP), capped by the position table."""
    return min(int(tokenizer.model_max_length), int(encoder.config.max_position_embeddings))


class VaeDecoder:
    """Latents -> images in [0, 1]: undo the latent normalisation, decode, map [-1, 1] to [0, 1].

    SD3's VAE normalises with z = (x - shift) * scale, so x = z / scale + shift; SD1.5's has no
    shift (None in its config).
    """

    def __init__(self, vae: AutoencoderKL, device: torch.device, batch: int = DECODE_BATCH) -> None:
        self.vae = vae
        self.device = device
        self.batch = batch
        self.scale = float(vae.config["scaling_factor"])
        self.shift = float(vae.config.get("shift_factor") or 0.0)

    @torch.no_grad()
    def __call__(self, latents: Tensor) -> Tensor:
        images = []
        for chunk in latents.split(self.batch):
            z = chunk.to(self.device, self.vae.dtype) / self.scale + self.shift
            decoded = self.vae.decode(z, return_dict=False)[0]  # (b, 3, H, W) in about [-1, 1]
            images.append((decoded.float() / 2.0 + 0.5).clamp(0.0, 1.0))
        return torch.cat(images)  # (B, 3, H, W)
