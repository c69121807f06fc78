"""Load an SD3-, FLUX.1- or SD1.5-family model from a local diffusers folder (a hub id is first
resolved to its snapshot folder in the local cache by `treegrpo.hub`), never from the network.

    adapter = load_local_model("/models/sd3.5-medium", "cuda", "bfloat16", size=(512, 512))

The family follows from the pipeline that model_index.json names in `_class_name`:
StableDiffusion3Pipeline -> `load_sd3` (models/sd3.py: flow matching), FluxPipeline ->
`load_flux` (models/flux.py: flow matching, packed latents), StableDiffusionPipeline ->
`load_sd15` (models/sd15.py: epsilon, DDIM). Each loads only the components TreeGRPO needs
(tokenizers, text encoders, the denoiser, the VAE, the scheduler's config) with the folder
toolkit of `treegrpo.models.folder`.

Precision: "float32" keeps everything in float32. "bfloat16" / "float16" store the frozen parts
(text encoders, VAE) in that dtype, while the trained denoiser keeps float32 master weights and
runs under autocast in that dtype (`adapter.autocast_dtype`); `enable_lora` then also stores the
frozen base of the denoiser in it.

Size: `size` = (sampling.height, sampling.width) in pixels, None for the model's own (SD3 and
SD1.5: the denoiser's sample_size x the VAE factor; FLUX: 1024 as FluxPipeline). It is checked
against the VAE factor and patch size from the config files before any weights load.
"""

from __future__ import annotations

from pathlib import Path

import torch

from treegrpo.config import ConfigError
from treegrpo.models.base import ModelAdapter
from treegrpo.models.flux import load_flux
from treegrpo.models.folder import Size, read_model_index
from treegrpo.models.sd3 import load_sd3
from treegrpo.models.sd15 import load_sd15

FAMILIES = {
    "StableDiffusion3Pipeline": "sd3",
    "StableDiffusionPipeline": "sd15",
    "FluxPipeline": "flux",
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_local_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    size: Size = (None, None),
    guidance: float | None = None,
    empty_denoiser: bool = False,
) -> ModelAdapter:
    """The adapter for a local diffusers pipeline folder (see the module docstring);
    `empty_denoiser` builds the denoiser on the meta device (`folder.load_denoiser`)."""
    folder = Path(path).expanduser()
    torch_dtype = DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if torch_dtype is None or torch_dtype not in DTYPES.values():
        raise ValueError(f"dtype {dtype!r} is not supported: expected one of {', '.join(DTYPES)}")
    index = read_model_index(folder)
    pipeline = index.get("_class_name")
    family = FAMILIES.get(str(pipeline))
    if family is None:
        raise ValueError(
            f"model folder {str(folder)!r} holds a {pipeline!r} pipeline: expected one of "
            f"{', '.join(FAMILIES)} in model_index.json's _class_name"
        )
    torch_device = torch.device(device)
    if guidance is not None and family != "flux":
        raise ConfigError(
            "sampling.guidance", "applies to guidance-distilled FLUX models; use sampling.cfg_scale"
        )
    if family == "flux":
        return load_flux(
            folder, index, torch_device, torch_dtype, str(path), size, guidance, empty_denoiser
        )
    if family == "sd3":
        return load_sd3(folder, index, torch_device, torch_dtype, str(path), size, empty_denoiser)
    return load_sd15(folder, index, torch_device, torch_dtype, str(path), size, empty_denoiser)
