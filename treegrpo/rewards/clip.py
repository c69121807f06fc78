"""CLIP-family rewards: clipscore, pickscore, hps and aesthetic, each on a LOCAL CLIP folder.

Every reward loads a transformers `CLIPModel` and its tokenizer from `reward_options.<name>.path`
(`from_pretrained(path, local_files_only=True)`; no hub access; a hub id is resolved in the local
cache by `treegrpo.hub`) and scores image-prompt pairs with
the model's projected, L2-normalised embeddings:

- `clipscore`: CLIPScore (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for
  Image Captioning", eq. 1): `w * max(cos(image, text), 0)`, w = option `weight` (default 2.5).
  The paper prefixes captions with "A photo depicts"; here the prompt is used as given.
- `pickscore`: PickScore (Kirstain et al. 2023, "Pick-a-Pic"; github.com/yuvalkirstain/PickScore):
  `logit_scale.exp() * cos(image, text)`, the diagonal of CLIP's `logits_per_image`. PickScore is a
  fine-tuned CLIP-H/14 scored exactly this way (about 20-23 for good images).
- `hps`: Human Preference Score v2 (Wu et al. 2023, "Human Preference Score v2";
  github.com/tgxs002/HPSv2, `img_score.py`): `cos(image, text)`, no logit scale, matching the
  0.2-0.4 scale HPS reports. Architecture assumption: HPSv2 is an OpenCLIP ViT-H/14 fine-tune; this
  code needs it as a transformers `CLIPModel` folder (converted by the user, e.g. with
  transformers' OpenCLIP conversion script), whose towers, projections and pooling match OpenCLIP's.
- `aesthetic`: LAION aesthetic predictor v2 (github.com/christophschuhmann/improved-aesthetic-
  predictor; used as a reward by DDPO, kvablack/ddpo-pytorch `aesthetic_scorer.py`): the
  L2-normalised CLIP image embedding (prompts unused) through a small MLP loaded from option `head`.

Options (all rewards): `path` (required, a local CLIPModel folder or a hub id such as
`yuvalkirstain/PickScore_v1[@REVISION]` found in the local Hugging Face cache), `batch_size` (default 32),
`dtype` (float32 | float16 | bfloat16, default float32; on an H200 a ViT-H/14 scored 64 images in
62 ms in bfloat16 against 485 ms in float32, with scores off by a few hundredths). clipscore, pickscore and hps also take
`processor_path` (a folder with the tokenizer and preprocessor_config.json, default `path`: PickScore
ships its processor apart from its model). clipscore takes `weight`. aesthetic takes `head` (required)
and `activation` (none | relu | gelu, default none).

The `head` file (.safetensors, or .pt/.pth holding a plain state dict) holds Linear layers only, as
`<prefix>.<i>.weight` (out, in) and optional `<prefix>.<i>.bias` (out,), applied in increasing i;
the prefix may be empty or anything (LAION's is `layers`). The first layer's `in` must equal the
CLIP `projection_dim`, each `in` the previous `out`, and the last `out` 1. LAION v2 (ViT-L/14):
layers.0 (1024, 768), layers.2 (128, 1024), layers.4 (64, 128), layers.6 (16, 64), layers.7 (1, 16),
with dropout (identity at eval) and no nonlinearity between them, hence `activation: none`.

Images are preprocessed in torch, batched, on the reward's device (no PIL round trip), as CLIP's
image processor does: grey repeated to RGB, shortest side resized to `vision_config.image_size`
(bicubic, antialiased), centre crop, normalised with the `image_mean`/`image_std` of the folder's
preprocessor_config.json when present, else OpenAI CLIP's.

    fn = REWARDS["pickscore"](torch.device("cuda"), {"path": "/models/pickscore"})
    scores = fn(images, prompts, metadata)  # (B,) float32 on the CPU
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from treegrpo.config import ConfigError, _choice, _float, _int, _text
from treegrpo.hub import local_folder
from treegrpo.rewards.signature import Metadata, RewardFn

# OpenAI CLIP's normalisation (transformers.image_utils.OPENAI_CLIP_MEAN / _STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_BATCH_SIZE = 32
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "none": lambda x: x,
    "relu": F.relu,
    "gelu": F.gelu,
}


# ---------------------------------------------------------------------------------------------
# Options


def _check_keys(name: str, options: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in options:
        if key not in allowed:
            raise ConfigError(
                f"reward_options.{name}.{key}",
                f"unknown option for {name}; known: {', '.join(allowed)}",
            )


def _folder(field: str, value: Any, what: str) -> Path:
    if value is None:
        raise ConfigError(field, f"missing: give the local folder or cached hub id of {what}")
    return local_folder(field, _text(field, value, max_chars=2048), what)


def _clip_folder(field: str, value: Any) -> Path:
    """A folder whose config.json is a CLIP model's (model_type 'clip')."""
    folder = _folder(field, value, "a transformers CLIPModel (config.json + weights)")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ConfigError(field, f"{folder} holds no CLIP model: no config.json")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(field, f"{folder} holds no CLIP model: bad config.json ({exc})") from exc
    if model_type != "clip":
        raise ConfigError(
            field,
            f"{folder} holds no CLIP model: config.json has model_type {model_type!r}, "
            "expected 'clip' (convert OpenCLIP weights to a transformers CLIPModel first)",
        )
    return folder


def _norm_stats(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """image_mean/image_std from the folder's preprocessor_config.json, else OpenAI CLIP's."""
    config_file = folder / "preprocessor_config.json"
    if not config_file.is_file():
        return CLIP_MEAN, CLIP_STD
    try:
        config = json.loads(config_file.read_text())
        mean = tuple(float(v) for v in config.get("image_mean", CLIP_MEAN))
        std = tuple(float(v) for v in config.get("image_std", CLIP_STD))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"bad preprocessor_config.json in {folder}: {exc}") from exc
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"bad image_mean/image_std in {config_file}: {mean}, {std}")
    return mean, std


# ---------------------------------------------------------------------------------------------
# The model, its preprocessing and embeddings


@dataclass
class ClipEncoder:
    """A CLIPModel with its tokenizer and image normalisation, on one device."""

    model: Any  # transformers.CLIPModel
    tokenizer: Any | None  # None for image-only rewards
    device: torch.device
    dtype: torch.dtype
    image_size: int
    mean: Tensor  # (1, 3, 1, 1)
    std: Tensor  # (1, 3, 1, 1)
    batch_size: int

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp())

    def pixel_values(self, images: Tensor) -> Tensor:
        """(B, 1 or 3, H, W) in [0, 1] -> (B, 3, S, S) normalised, S = vision image_size."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images (B, 1 or 3, H, W), got shape {tuple(images.shape)}")
        x = images.to(self.device, torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # (B, 3, H, W): grey repeated to RGB
        # As CLIP's image processor: shortest side to S (bicubic), then a centre S x S crop.
        size = self.image_size
        height, width = x.shape[-2:]
        scale = size / min(height, width)
        new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
        if (new_h, new_w) != (height, width):
            x = F.interpolate(
                x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True
            )
        top, left = (new_h - size) // 2, (new_w - size) // 2
        x = x[:, :, top : top + size, left : left + size].clamp(0, 1)  # (B, 3, S, S)
        return ((x - self.mean) / self.std).to(self.dtype)

    @torch.no_grad()
    def image_embeds(self, images: Tensor) -> Tensor:
        """(B, D) float32 L2-normalised projected image embeddings, on the device."""
        chunks = []
        for start in range(0, images.shape[0], self.batch_size):
            pixels = self.pixel_values(images[start : start + self.batch_size])
            chunks.append(_pooled(self.model.get_image_features(pixel_values=pixels)))
        return F.normalize(torch.cat(chunks).float(), dim=-1)

    @torch.no_grad()
    def text_embeds(self, prompts: Sequence[str]) -> Tensor:
        """(B, D) float32 L2-normalised projected text embeddings; each distinct prompt once."""
        if self.tokenizer is None:
            raise RuntimeError("this CLIP encoder was loaded without a tokenizer")
        distinct = list(dict.fromkeys(prompts))
        max_length = int(self.model.config.text_config.max_position_embeddings)
        chunks = []
        for start in range(0, len(distinct), self.batch_size):
            tokens = self.tokenizer(
                distinct[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(self.device)
            chunks.append(
                _pooled(
                    self.model.get_text_features(
                        input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
                    )
                )
            )
        embeds = F.normalize(torch.cat(chunks).float(), dim=-1)  # (distinct, D)
        index = {prompt: i for i, prompt in enumerate(distinct)}
        rows = torch.tensor([index[p] for p in prompts], device=embeds.device)
        return embeds[rows]  # (B, D)

    def cosine(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        """(B,) float32 on the device: cos(image_i, prompt_i)."""
        _check_batch(images, prompts)
        return (self.image_embeds(images) * self.text_embeds(prompts)).sum(dim=-1)


def _pooled(output: Any) -> Tensor:
    """The projected embedding from get_*_features (a tensor, or a ModelOutput in transformers 5)."""
    return output if isinstance(output, Tensor) else output.pooler_output


def _check_batch(images: Tensor, prompts: Sequence[str]) -> None:
    if len(prompts) != images.shape[0]:
        raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts")


def load_clip_encoder(
    name: str, device: torch.device, options: Mapping[str, Any], *, with_tokenizer: bool = True
) -> ClipEncoder:
    """The CLIPModel (and tokenizer) of `reward_options.<name>`; ConfigError if it cannot load."""
    where = f"reward_options.{name}"
    folder = _clip_folder(f"{where}.path", options.get("path"))
    processor_folder = folder
    if with_tokenizer and options.get("processor_path") is not None:
        processor_folder = _folder(
            f"{where}.processor_path", options["processor_path"], "a CLIP tokenizer"
        )
    batch_size = _int(f"{where}.batch_size", options.get("batch_size", DEFAULT_BATCH_SIZE), lo=1)
    dtype = DTYPES[_choice(f"{where}.dtype", options.get("dtype", "float32"), DTYPES)]

    from transformers import AutoTokenizer, CLIPModel  # heavy: only when a CLIP reward is used

    try:
        model, info = CLIPModel.from_pretrained(
            folder, local_files_only=True, dtype=dtype, output_loading_info=True
        )
    except Exception as exc:  # transformers raises OSError, ValueError, RuntimeError, ...
        raise ConfigError(
            f"{where}.path", f"could not load a CLIPModel from {folder}: {exc}"
        ) from exc
    missing = [key for key in info.get("missing_keys", ()) if not key.endswith("position_ids")]
    if missing:
        raise ConfigError(
            f"{where}.path",
            f"{folder} holds an incomplete CLIP checkpoint: {len(missing)} missing weights, "
            f"e.g. {sorted(missing)[:3]}",
        )
    tokenizer = None
    if with_tokenizer:
        field = f"{where}.processor_path" if processor_folder != folder else f"{where}.path"
        # Without its files AutoTokenizer quietly builds a CLIP tokenizer with an empty vocabulary.
        has_files = (processor_folder / "tokenizer.json").is_file() or all(
            (processor_folder / name).is_file() for name in ("vocab.json", "merges.txt")
        )
        if not has_files:
            raise ConfigError(
                field,
                f"{processor_folder} holds no CLIP tokenizer (tokenizer.json, or vocab.json + "
                "merges.txt); give the folder that has it as processor_path",
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(processor_folder, local_files_only=True)
        except Exception as exc:
            raise ConfigError(
                field, f"could not load a CLIP tokenizer from {processor_folder}: {exc}"
            ) from exc
    try:
        mean, std = _norm_stats(processor_folder)
    except ValueError as exc:
        raise ConfigError(f"{where}.path", str(exc)) from exc

    model.to(device).eval().requires_grad_(False)
    return ClipEncoder(
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        image_size=int(model.config.vision_config.image_size),
        mean=torch.tensor(mean, device=device).view(1, 3, 1, 1),
        std=torch.tensor(std, device=device).view(1, 3, 1, 1),
        batch_size=batch_size,
    )


# ---------------------------------------------------------------------------------------------
# Text-image rewards

_TEXT_OPTIONS = ("path", "processor_path", "batch_size", "dtype")


def clipscore_factory(device: torch.device, options: Mapping[str, Any]) -> RewardFn:
    """CLIPScore: w * max(cos, 0) (Hessel et al. 2021, eq. 1)."""
    _check_keys("clipscore", options, (*_TEXT_OPTIONS, "weight"))
    weight = _float(
        "reward_options.clipscore.weight", options.get("weight", 2.5), lo=0, lo_open=True
    )
    encoder = load_clip_encoder("clipscore", device, options)

    def clipscore(images: Tensor, prompts: Sequence[str], metadata: Metadata = ()) -> Tensor:
        return (weight * encoder.cosine(images, prompts).clamp(min=0)).cpu()

    return clipscore


def pickscore_factory(device: torch.device, options: Mapping[str, Any]) -> RewardFn:
    """PickScore: logit_scale.exp() * cos, the diagonal of CLIP's logits_per_image."""
    _check_keys("pickscore", options, _TEXT_OPTIONS)
    encoder = load_clip_encoder("pickscore", device, options)
    scale = encoder.logit_scale

    def pickscore(images: Tensor, prompts: Sequence[str], metadata: Metadata = ()) -> Tensor:
        return (scale * encoder.cosine(images, prompts)).cpu()

    return pickscore


def hps_factory(device: torch.device, options: Mapping[str, Any]) -> RewardFn:
    """HPS v2: cos(image, text) of a (converted) fine-tuned CLIP, no logit scale."""
    _check_keys("hps", options, _TEXT_OPTIONS)
    encoder = load_clip_encoder("hps", device, options)

    def hps(images: Tensor, prompts: Sequence[str], metadata: Metadata = ()) -> Tensor:
        return encoder.cosine(images, prompts).cpu()

    return hps


# ---------------------------------------------------------------------------------------------
# Aesthetic head

_LAYER_KEY = re.compile(r"^(?:(?P<prefix>.*)\.)?(?P<index>\d+)\.(?P<kind>weight|bias)$")


def load_head_state(field: str, value: Any) -> dict[str, Tensor]:
    """The state dict in a .safetensors or .pt/.pth file (CPU tensors)."""
    if value is None:
        raise ConfigError(field, "missing: give the aesthetic MLP head (.safetensors or .pt file)")
    file = Path(_text(field, value, max_chars=2048)).expanduser()
    if not file.is_file():
        raise ConfigError(field, f"no such file: {file}")
    if file.suffix not in (".safetensors", ".pt", ".pth"):
        raise ConfigError(field, f"expected a .safetensors, .pt or .pth file, got {file.name}")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(file))
        else:  # a pickled state dict; weights_only refuses arbitrary objects
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(field, f"could not read {file}: {exc}") from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(field, f"{file} does not hold a state dict of tensors")
    return {str(k): v for k, v in state.items()}


def mlp_layers(field: str, state: Mapping[str, Tensor], in_dim: int) -> list[tuple[Tensor, Tensor]]:
    """[(weight (out, in), bias (out,)), ...] in layer order, checked to map in_dim -> 1."""
    layers: dict[int, dict[str, Tensor]] = {}
    prefixes = set()
    for key, tensor in state.items():
        match = _LAYER_KEY.match(key)
        if match is None:
            raise ConfigError(field, f"unexpected key {key!r}: expected '<prefix>.<i>.weight|bias'")
        prefixes.add(match["prefix"])
        layers.setdefault(int(match["index"]), {})[match["kind"]] = tensor.float()
    if len(prefixes) > 1:
        raise ConfigError(field, f"keys mix prefixes {sorted(map(str, prefixes))}")
    if not layers:
        raise ConfigError(field, "the head has no layers")
    out: list[tuple[Tensor, Tensor]] = []
    dim = in_dim
    for index in sorted(layers):
        weight = layers[index].get("weight")
        if weight is None or weight.ndim != 2:
            raise ConfigError(field, f"layer {index} needs a 2-D weight (out, in)")
        if weight.shape[1] != dim:
            source = "the CLIP projection_dim" if not out else "the previous layer's outputs"
            raise ConfigError(
                field, f"layer {index} takes {weight.shape[1]} inputs but {source} is {dim}"
            )
        bias = layers[index].get("bias", torch.zeros(weight.shape[0]))
        if bias.shape != (weight.shape[0],):
            raise ConfigError(field, f"layer {index} bias has shape {tuple(bias.shape)}")
        out.append((weight, bias))
        dim = weight.shape[0]
    if dim != 1:
        raise ConfigError(field, f"the last layer has {dim} outputs, expected 1")
    return out


def aesthetic_factory(device: torch.device, options: Mapping[str, Any]) -> RewardFn:
    """LAION aesthetic predictor v2: MLP head on the L2-normalised CLIP image embedding."""
    _check_keys("aesthetic", options, ("path", "head", "activation", "batch_size", "dtype"))
    field = "reward_options.aesthetic.head"
    state = load_head_state(field, options.get("head"))
    activation = ACTIVATIONS[
        _choice(
            "reward_options.aesthetic.activation", options.get("activation", "none"), ACTIVATIONS
        )
    ]
    encoder = load_clip_encoder("aesthetic", device, options, with_tokenizer=False)
    layers = [
        (w.to(device), b.to(device))
        for w, b in mlp_layers(field, state, int(encoder.model.config.projection_dim))
    ]

    def aesthetic(images: Tensor, prompts: Sequence[str], metadata: Metadata = ()) -> Tensor:
        _check_batch(images, prompts)
        x = encoder.image_embeds(images)  # (B, D), unit norm
        for i, (weight, bias) in enumerate(layers):
            x = F.linear(x, weight, bias)
            if i < len(layers) - 1:
                x = activation(x)
        return x[:, 0].cpu()  # (B,)

    return aesthetic
