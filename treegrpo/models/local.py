"""Load an SD3-, FLUX.1- or SD1.5-family model from a local diffusers folder (a hub id is first
resolved to its snapshot folder in the local cache by `treegrpo.hub`), never from the network.

    adapter = load_local_model("/models/sd3.5-medium", "cuda", "bfloat16", size=(512, 512))

A folder is what `pipeline.save_pretrained(path)` writes (a hub snapshot copied to disk has the
same layout): a model_index.json whose `_class_name` names the pipeline, and one subfolder per
component. The family follows from that name: StableDiffusion3Pipeline -> `SD3StyleAdapter`
(flow matching), FluxPipeline -> `FluxAdapter` (flow matching, packed latents),
StableDiffusionPipeline -> `SD15Adapter` (epsilon, DDIM). Only the components
TreeGRPO needs are loaded (tokenizers, text encoders, the denoiser, the VAE, the scheduler's
config), each with local_files_only=True, so a missing file is an error rather than a download.

Precision: "float32" keeps everything in float32. "bfloat16" / "float16" store the frozen parts
(text encoders, VAE) in that dtype, while the trained denoiser keeps float32 master weights and
runs under autocast in that dtype (`adapter.autocast_dtype`); `enable_lora` then also stores the
frozen base of the denoiser in it.

Size: `size` = (sampling.height, sampling.width) in pixels, None for the model's own (SD3 and
SD1.5: the denoiser's sample_size x the VAE factor; FLUX: 1024 as FluxPipeline). It is checked
against the VAE factor and patch size from the config files before any weights load.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers import (
    AutoencoderKL,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    UNet2DConditionModel,
)
from torch import Tensor, nn
from transformers import (
    AutoTokenizer,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    PreTrainedTokenizerBase,
    T5EncoderModel,
)

from treegrpo.config import ConfigError
from treegrpo.models.base import ModelAdapter
from treegrpo.models.flux import FluxAdapter
from treegrpo.models.sd3 import SD3StyleAdapter
from treegrpo.models.sd15 import SD15Adapter
from treegrpo.models.sizes import image_size as checked_image_size

FAMILIES = {
    "StableDiffusion3Pipeline": "sd3",
    "StableDiffusionPipeline": "sd15",
    "FluxPipeline": "flux",
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
T5_MAX_TOKENS = 256  # StableDiffusion3Pipeline's default max_sequence_length
FLUX_T5_MAX_TOKENS = 512  # FluxPipeline's default max_sequence_length
FLUX_DEFAULT_LATENT = 128  # FluxPipeline.default_sample_size: 1024 px with an 8x VAE
DECODE_BATCH = 8  # VAE decodes at full resolution: bound the activation memory of one call

ModuleT = TypeVar("ModuleT", bound=nn.Module)


# -- the folder --------------------------------------------------------------------------------


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


Size = tuple[int | None, int | None]  # requested (sampling.height, sampling.width); None = default


def frozen(module: ModuleT, device: torch.device) -> ModuleT:
    """Inference-only: no gradients, eval mode (no dropout), on `device`."""
    module.requires_grad_(False)
    module.eval()
    module.to(device)
    return module


def load_tokenizer(folder: Path, name: str) -> PreTrainedTokenizerBase:
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


# -- text encoders and the decoder ---------------------------------------------------------------


class SD3TextEncoder:
    """SD3's conditioning, following diffusers' StableDiffusion3Pipeline.encode_prompt:

        clip   = [CLIP-L penultimate states | CLIP-G penultimate states]    (B, 77, dL + dG)
        tokens = [clip zero-padded to T5's width ; T5 last states]           (B, 77 + 256, D)
        pooled = [CLIP-L projection | CLIP-G projection]                      (B, pL + pG)

    Without a T5 encoder its states are zeros of the transformer's joint_attention_dim width, as
    in diffusers, so a model trained with T5 still sees the sequence length it expects.
    """

    def __init__(
        self,
        clip_l: tuple[PreTrainedTokenizerBase, CLIPTextModelWithProjection],
        clip_g: tuple[PreTrainedTokenizerBase, CLIPTextModelWithProjection],
        t5: tuple[PreTrainedTokenizerBase, T5EncoderModel] | None,
        joint_dim: int,
        device: torch.device,
        t5_tokens: int = T5_MAX_TOKENS,
    ) -> None:
        self.clips = (clip_l, clip_g)
        self.t5 = t5
        self.joint_dim = joint_dim
        self.device = device
        self.t5_tokens = t5_tokens
        # diffusers pads both CLIPs to the first tokenizer's length, so their states align.
        self.clip_tokens = clip_length(*clip_l)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        states, pooled = [], []
        for tokenizer, encoder in self.clips:
            out = encoder(
                token_ids(tokenizer, prompts, self.clip_tokens, self.device),
                output_hidden_states=True,
            )
            assert out.hidden_states is not None and out.text_embeds is not None
            states.append(out.hidden_states[-2])  # (B, 77, d): penultimate layer, as SD3 trained
            pooled.append(out.text_embeds)  # (B, p)
        clip = torch.cat(states, dim=-1)  # (B, 77, dL + dG)
        if self.t5 is None:
            t5 = clip.new_zeros(len(prompts), self.t5_tokens, self.joint_dim)  # (B, 256, D)
        else:
            tokenizer, encoder = self.t5
            t5 = encoder(token_ids(tokenizer, prompts, self.t5_tokens, self.device))[0]
            t5 = t5.to(clip.dtype)  # (B, 256, D); T5 may keep some layers in float32
        clip = nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))  # (B, 77, D)
        return torch.cat([clip, t5], dim=-2), torch.cat(pooled, dim=-1)


class CLIPTokenStates:
    """SD1.5's conditioning: the CLIP text encoder's last hidden states (B, 77, d), no pooled."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, encoder: CLIPTextModel, device: torch.device
    ) -> None:
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.device = device
        self.tokens = clip_length(tokenizer, encoder)
        # A few fine-tunes set this flag; diffusers then passes the padding mask, and so do we.
        self.use_mask = bool(getattr(encoder.config, "use_attention_mask", False))

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> Tensor:
        batch = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokens,
            truncation=True,
            return_tensors="pt",
        )
        mask = batch["attention_mask"].to(self.device) if self.use_mask else None
        states: Tensor = self.encoder(
            batch["input_ids"].to(self.device), attention_mask=mask
        ).last_hidden_state
        return states  # (B, 77, d)


class FluxTextEncoder:
    """FLUX's conditioning, following diffusers' FluxPipeline.encode_prompt:

    pooled = CLIP pooler output (the end-of-text token's state)   (B, P)
    tokens = T5 last hidden states, 512 tokens                     (B, 512, D)
    """

    def __init__(
        self,
        clip: tuple[PreTrainedTokenizerBase, CLIPTextModel],
        t5: tuple[PreTrainedTokenizerBase, T5EncoderModel],
        device: torch.device,
        t5_tokens: int = FLUX_T5_MAX_TOKENS,
    ) -> None:
        self.clip = clip
        self.t5 = t5
        self.device = device
        self.t5_tokens = t5_tokens
        # FluxPipeline pads CLIP to tokenizer.model_max_length (77), whatever the position table.
        self.clip_tokens = int(clip[0].model_max_length)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        tokenizer, encoder = self.clip
        pooled = encoder(token_ids(tokenizer, prompts, self.clip_tokens, self.device)).pooler_output
        tokenizer, t5 = self.t5
        states = t5(token_ids(tokenizer, prompts, self.t5_tokens, self.device))[0]
        return states.to(pooled.dtype), pooled  # (B, L, D), (B, P)


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


# -- the two families ----------------------------------------------------------------------------


def load_sd3(
    folder: Path,
    index: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
    name: str,
    size: Size = (None, None),
) -> SD3StyleAdapter:
    required = ["transformer", "vae", "scheduler", "text_encoder", "tokenizer"]
    require_components(folder, index, [*required, "text_encoder_2", "tokenizer_2"])
    dit = component_config(folder, "transformer")
    require_class(folder, "transformer", dit, "SD3Transformer2DModel")
    scale, patch = vae_scale_factor(component_config(folder, "vae")), int(dit["patch_size"])
    default_h, default_w = image_size(dit["sample_size"])
    max_positions = dit.get("pos_embed_max_size")
    height, width = checked_image_size(
        size,
        (default_h * scale, default_w * scale),
        scale * patch,
        f"the VAE's {scale}x times the transformer's {patch}x{patch} patches",
        None if max_positions is None else int(max_positions) * patch * scale,
    )
    height, width = height // scale, width // scale
    frozen_kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}

    transformer = SD3Transformer2DModel.from_pretrained(
        folder / "transformer", dtype=torch.float32, local_files_only=True
    )
    transformer.to(device)
    clip_l = (
        load_tokenizer(folder, "tokenizer"),
        frozen(
            CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder", **frozen_kwargs),
            device,
        ),
    )
    clip_g = (
        load_tokenizer(folder, "tokenizer_2"),
        frozen(
            CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2", **frozen_kwargs),
            device,
        ),
    )
    t5 = None
    if has_component(index, "text_encoder_3"):
        require_components(folder, index, ["text_encoder_3", "tokenizer_3"])
        t5 = (
            load_tokenizer(folder, "tokenizer_3"),
            frozen(
                T5EncoderModel.from_pretrained(folder / "text_encoder_3", **frozen_kwargs), device
            ),
        )
    vae = frozen(AutoencoderKL.from_pretrained(folder / "vae", **frozen_kwargs), device)

    config = transformer.config
    joint_dim = int(config["joint_attention_dim"])
    clip_width = sum(int(encoder.config.hidden_size) for _, encoder in (clip_l, clip_g))
    pooled_width = sum(int(encoder.config.projection_dim) for _, encoder in (clip_l, clip_g))
    widths_fit = (
        clip_width <= joint_dim
        and pooled_width == int(config["pooled_projection_dim"])
        and (t5 is None or int(t5[1].config.d_model) == joint_dim)
        and int(vae.config["latent_channels"]) == int(config["in_channels"])
    )
    if not widths_fit:
        raise ValueError(
            f"model folder {str(folder)!r}: component widths do not fit together (CLIP states "
            f"{clip_width} <= joint_attention_dim {joint_dim}, CLIP projections {pooled_width} == "
            f"pooled_projection_dim {config['pooled_projection_dim']}, T5 width == "
            f"{joint_dim}, VAE latent_channels == transformer in_channels were expected)"
        )

    scheduler = scheduler_config(folder)
    return SD3StyleAdapter(
        name,
        transformer,
        SD3TextEncoder(clip_l, clip_g, t5, joint_dim, device),
        VaeDecoder(vae, device),
        latent_shape=(int(config["in_channels"]), height, width),
        device=device,
        dtype=torch.float32,  # inputs match the float32 master weights; autocast lowers them
        family="flow",
        scheduler_config=scheduler,
        autocast_dtype=None if dtype == torch.float32 else dtype,
    )


def load_sd15(
    folder: Path,
    index: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
    name: str,
    size: Size = (None, None),
) -> SD15Adapter:
    require_components(folder, index, ["unet", "vae", "scheduler", "text_encoder", "tokenizer"])
    scheduler = scheduler_config(folder)
    scale = vae_scale_factor(component_config(folder, "vae"))
    default_h, default_w = image_size(component_config(folder, "unet")["sample_size"])
    height, width = checked_image_size(
        size, (default_h * scale, default_w * scale), scale, f"the VAE's {scale}x"
    )
    height, width = height // scale, width // scale
    prediction = scheduler.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise ValueError(
            f"model folder {str(folder)!r}: prediction_type {prediction!r} is not supported; "
            "the SD1.5 family here expects epsilon prediction"
        )
    frozen_kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}

    unet = UNet2DConditionModel.from_pretrained(
        folder / "unet", dtype=torch.float32, local_files_only=True
    )
    unet.to(device)
    tokenizer = load_tokenizer(folder, "tokenizer")
    text_encoder = frozen(
        CLIPTextModel.from_pretrained(folder / "text_encoder", **frozen_kwargs), device
    )
    vae = frozen(AutoencoderKL.from_pretrained(folder / "vae", **frozen_kwargs), device)

    config = unet.config
    channels = int(config["in_channels"])
    widths_fit = int(text_encoder.config.hidden_size) == int(
        config["cross_attention_dim"]
    ) and channels == int(config["out_channels"]) == int(vae.config["latent_channels"])
    if not widths_fit:
        raise ValueError(
            f"model folder {str(folder)!r}: component widths do not fit together (text encoder "
            f"hidden_size == unet cross_attention_dim, unet in_channels == out_channels == VAE "
            "latent_channels were expected)"
        )
    return SD15Adapter(
        name,
        unet,
        CLIPTokenStates(tokenizer, text_encoder, device),
        VaeDecoder(vae, device),
        latent_shape=(channels, height, width),
        device=device,
        scheduler_config=scheduler,
        dtype=torch.float32,
        autocast_dtype=None if dtype == torch.float32 else dtype,
    )


def load_flux(
    folder: Path,
    index: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
    name: str,
    size: Size = (None, None),
    guidance: float | None = None,
) -> FluxAdapter:
    required = ["transformer", "vae", "scheduler", "text_encoder", "tokenizer"]
    require_components(folder, index, [*required, "text_encoder_2", "tokenizer_2"])
    dit = component_config(folder, "transformer")
    require_class(folder, "transformer", dit, "FluxTransformer2DModel")
    scale = vae_scale_factor(component_config(folder, "vae"))
    height, width = checked_image_size(
        size,
        (FLUX_DEFAULT_LATENT * scale, FLUX_DEFAULT_LATENT * scale),
        scale * 2,
        f"the VAE's {scale}x times FLUX's 2x2 packing",
    )
    if guidance is not None and not dit.get("guidance_embeds", False):
        raise ConfigError(
            "sampling.guidance",
            "this FLUX transformer has no guidance embedding (guidance_embeds false, as "
            "FLUX.1-schnell): leave sampling.guidance null",
        )
    frozen_kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}

    transformer = FluxTransformer2DModel.from_pretrained(
        folder / "transformer", dtype=torch.float32, local_files_only=True
    )
    transformer.to(device)
    clip = (
        load_tokenizer(folder, "tokenizer"),
        frozen(CLIPTextModel.from_pretrained(folder / "text_encoder", **frozen_kwargs), device),
    )
    t5 = (
        load_tokenizer(folder, "tokenizer_2"),
        frozen(T5EncoderModel.from_pretrained(folder / "text_encoder_2", **frozen_kwargs), device),
    )
    vae = frozen(AutoencoderKL.from_pretrained(folder / "vae", **frozen_kwargs), device)

    config = transformer.config
    channels = int(vae.config["latent_channels"])
    widths_fit = (
        int(config["in_channels"]) == 4 * channels
        and int(t5[1].config.d_model) == int(config["joint_attention_dim"])
        and int(clip[1].config.hidden_size) == int(config["pooled_projection_dim"])
    )
    if not widths_fit:
        raise ValueError(
            f"model folder {str(folder)!r}: component widths do not fit together (transformer "
            f"in_channels {config['in_channels']} == 4 x VAE latent_channels {channels}, T5 "
            f"width == joint_attention_dim {config['joint_attention_dim']}, CLIP width == "
            f"pooled_projection_dim {config['pooled_projection_dim']} were expected)"
        )
    return FluxAdapter(
        name,
        transformer,
        FluxTextEncoder(clip, t5, device),
        VaeDecoder(vae, device),
        latent_shape=(channels, height // scale, width // scale),
        device=device,
        scheduler_config=scheduler_config(folder),
        guidance=guidance,
        dtype=torch.float32,
        autocast_dtype=None if dtype == torch.float32 else dtype,
    )


def load_local_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    size: Size = (None, None),
    guidance: float | None = None,
) -> ModelAdapter:
    """The adapter for a local diffusers pipeline folder (see the module docstring)."""
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
        return load_flux(folder, index, torch_device, torch_dtype, str(path), size, guidance)
    if family == "sd3":
        return load_sd3(folder, index, torch_device, torch_dtype, str(path), size)
    return load_sd15(folder, index, torch_device, torch_dtype, str(path), size)
