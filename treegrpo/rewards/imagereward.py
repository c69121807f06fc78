"""imagereward: ImageReward (Xu et al. 2023) ported onto transformers' BLIP classes.

The original package (THUDM/ImageReward, `ImageReward/ImageReward.py`) cannot be imported with
transformers 5 and needs timm, fairscale, torchvision and OpenAI's CLIP; this port needs none of
them and loads the original checkpoint as it is:

    <path>/ImageReward.pt     the state dict of `ImageReward` (torch.load, tensors only)
    <path>/med_config.json    the BERT config of its text encoder (BLIP's `med_config.json`)
    tokenizer                 bert-base-uncased (vocab.txt or tokenizer.json) in `tokenizer_path`,
                              default `path`; [DEC] and [ENC] are added as BLIP's init_tokenizer does

The model (ImageReward.py `ImageReward.score` / `inference_rank`):

    image  -> BLIP ViT (`blip.visual_encoder`; ViT-L/16 at 224)           -> tokens (B, N+1, Dv)
    prompt -> [CLS] prompt [SEP], padded to 35 tokens (`max_length=35`)
           -> BERT with cross-attention to the image tokens in every layer (`blip.text_encoder`)
           -> the [CLS] state (B, 768) -> `mlp`: Linear 768-1024-128-64-16-1, no nonlinearity
              (its ReLUs are commented out; dropout is off at eval)
    reward = (r - 0.16717362830052426) / 1.0333394966054072

Key renaming, original -> transformers: `blip.visual_encoder.` `cls_token` -> `class_embedding`,
`pos_embed` -> `position_embedding`, `patch_embed.proj` -> `patch_embedding`, `blocks.i.norm1/2`
-> `encoder.layers.i.layer_norm1/2`, `blocks.i.attn.qkv/proj` -> `...self_attn.qkv/projection`,
`blocks.i.mlp.fc1/2` -> `...mlp.fc1/2`, `norm` -> `post_layernorm` (a `BlipVisionModel`; timm's
fused qkv has the same (3, heads, head_dim) row order). `blip.text_encoder.*` keeps its names in a
`BlipTextModel` (transformers ported BLIP's `med.py`), built with cross-attention layers and run
bidirectionally. `blip.vision_proj` / `blip.text_proj` (BLIP's contrastive heads) are unused by
the score and skipped. Every other weight must be found: a checkpoint in another layout is a
ConfigError listing what is missing, never a silently random model. The ViT's depth, width, patch
and image size are read from the weights; its heads are width / 64 (ViT-B/16: 12, ViT-L/16: 16).

Preprocessing as the original's: 8-bit image, shortest side to 224 bicubic, centre crop, OpenAI
CLIP mean/std (here torch's antialiased bicubic on the batch instead of PIL's on each image).

Options (`reward_options.imagereward`): `path` (required: the folder, or a hub id such as
`THUDM/ImageReward` in the local cache), `tokenizer_path`, `batch_size` (default 32), `dtype`
(float32 | float16 | bfloat16, default float32; the head always runs in float32).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from treegrpo.config import ConfigError, _choice, _int
from treegrpo.rewards.clip import CLIP_MEAN, CLIP_STD, DTYPES, _check_keys, _folder, mlp_layers
from treegrpo.rewards.image_ops import as_rgb_bytes, normalised, resized_crop
from treegrpo.rewards.signature import Metadata, RewardFn

OPTIONS = ("path", "tokenizer_path", "batch_size", "dtype")
CHECKPOINT = "ImageReward.pt"
MED_CONFIG = "med_config.json"
# ImageReward.py: `self.mean = 0.16717362830052426`, `self.std = 1.0333394966054072`.
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
MAX_TOKENS = 35  # ImageReward.py: tokenizer(..., max_length=35)
VIT_HEAD_DIM = 64
VIT_LAYER_NORM_EPS = 1e-6  # BLIP vit.py: partial(nn.LayerNorm, eps=1e-6)
SKIPPED = ("blip.vision_proj.", "blip.text_proj.", "blip.text_encoder.embeddings.position_ids")

_VIT_RENAMES = (
    (re.compile(r"^cls_token$"), "embeddings.class_embedding"),
    (re.compile(r"^pos_embed$"), "embeddings.position_embedding"),
    (re.compile(r"^patch_embed\.proj\.(weight|bias)$"), r"embeddings.patch_embedding.\1"),
    (
        re.compile(r"^blocks\.(\d+)\.norm([12])\.(weight|bias)$"),
        r"encoder.layers.\1.layer_norm\2.\3",
    ),
    (
        re.compile(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$"),
        r"encoder.layers.\1.self_attn.qkv.\2",
    ),
    (
        re.compile(r"^blocks\.(\d+)\.attn\.proj\.(weight|bias)$"),
        r"encoder.layers.\1.self_attn.projection.\2",
    ),
    (re.compile(r"^blocks\.(\d+)\.mlp\.(fc[12])\.(weight|bias)$"), r"encoder.layers.\1.mlp.\2.\3"),
    (re.compile(r"^norm\.(weight|bias)$"), r"post_layernorm.\1"),
)


def split_checkpoint(
    field: str, state: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """The original state dict -> (vision, text, head) state dicts in transformers' names (head:
    `mlp.layers.<i>.*` as is). A key of no known part is a ConfigError."""
    vision: dict[str, Tensor] = {}
    text: dict[str, Tensor] = {}
    head: dict[str, Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        if key.startswith(SKIPPED):
            continue
        if key.startswith("blip.visual_encoder."):
            name = key.removeprefix("blip.visual_encoder.")
            for pattern, replacement in _VIT_RENAMES:
                if pattern.match(name):
                    vision[pattern.sub(replacement, name)] = tensor
                    break
            else:
                unknown.append(key)
        elif key.startswith("blip.text_encoder."):
            text[key.removeprefix("blip.text_encoder.")] = tensor
        elif key.startswith("mlp.layers."):
            head[key] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(
            field,
            f"{len(unknown)} weights of no part of ImageReward (blip.visual_encoder, "
            f"blip.text_encoder, mlp.layers), e.g. {sorted(unknown)[:3]}: not an ImageReward.pt",
        )
    return vision, text, head


def _vision_config(field: str, vision: Mapping[str, Tensor]) -> Any:
    from transformers import BlipVisionConfig

    try:
        width = int(vision["embeddings.class_embedding"].shape[-1])
        patch = int(vision["embeddings.patch_embedding.weight"].shape[-1])
        positions = int(vision["embeddings.position_embedding"].shape[1])
        intermediate = int(vision["encoder.layers.0.mlp.fc1.weight"].shape[0])
    except KeyError as exc:
        raise ConfigError(field, f"the checkpoint has no ViT weight {exc}") from None
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1 or width % VIT_HEAD_DIM:
        raise ConfigError(field, f"unexpected ViT shapes: {positions} positions, width {width}")
    layers = 1 + max(int(k.split(".")[2]) for k in vision if k.startswith("encoder.layers."))
    return BlipVisionConfig(
        hidden_size=width,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=width // VIT_HEAD_DIM,
        image_size=grid * patch,
        patch_size=patch,
        hidden_act="gelu",
        layer_norm_eps=VIT_LAYER_NORM_EPS,
    )


def _text_config(field: str, med: Mapping[str, Any], encoder_width: int) -> Any:
    from transformers import BlipTextConfig

    keys = (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
        "layer_norm_eps",
        "hidden_act",
        "pad_token_id",
    )
    missing = [key for key in keys if key not in med]
    if missing:
        raise ConfigError(field, f"{MED_CONFIG} lacks {missing}")
    if med.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(field, f"{MED_CONFIG}: only absolute position embeddings are supported")
    return BlipTextConfig(
        **{key: med[key] for key in keys},
        encoder_hidden_size=encoder_width,  # blip_pretrain.py: encoder_config.encoder_width = vision_width
        is_decoder=True,  # builds the cross-attention layers; run with is_decoder=False
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def _load_part(field: str, model: torch.nn.Module, state: Mapping[str, Tensor], part: str) -> None:
    """Load `state` into `model` (built on the meta device: no random init of ~470 M weights),
    every parameter found and no weight left over."""
    result = model.load_state_dict(dict(state), strict=False, assign=True)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise ConfigError(
            field,
            f"the checkpoint's {part} does not match ImageReward's layout: "
            f"{len(missing)} weights missing (e.g. {sorted(missing)[:3]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {sorted(result.unexpected_keys)[:3]})",
        )
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta:  # non-persistent buffers: only BERT's position ids, 0 .. max - 1
            if not name.endswith("position_ids"):
                raise ConfigError(field, f"the {part} has no value for its buffer {name}")
            owner = model.get_submodule(name.rpartition(".")[0])
            positions = torch.arange(buffer.shape[-1]).expand(buffer.shape)
            owner.register_buffer("position_ids", positions, persistent=False)


def _tokenizer(field: str, folder: Path) -> Any:
    has_files = (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()
    if not has_files:
        raise ConfigError(
            field,
            f"{folder} holds no BERT tokenizer (vocab.txt or tokenizer.json): give a local "
            "bert-base-uncased folder as tokenizer_path",
        )
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise ConfigError(field, f"could not load a tokenizer from {folder}: {exc}") from exc
    # BLIP's init_tokenizer: bos [DEC] and one extra special token [ENC] (ids 30522, 30523).
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_tokens(["[ENC]"], special_tokens=True)
    return tokenizer


def imagereward_factory(device: torch.device, options: Mapping[str, Any]) -> RewardFn:
    """Registry factory for `imagereward` (module docstring)."""
    _check_keys("imagereward", options, OPTIONS)
    where = "reward_options.imagereward"
    field = f"{where}.path"
    folder = _folder(field, options.get("path"), f"ImageReward ({CHECKPOINT} + {MED_CONFIG})")
    tokenizer_field = f"{where}.tokenizer_path" if "tokenizer_path" in options else field
    tokenizer_folder = (
        _folder(tokenizer_field, options["tokenizer_path"], "a bert-base-uncased tokenizer")
        if "tokenizer_path" in options
        else folder
    )
    batch_size = _int(f"{where}.batch_size", options.get("batch_size", 32), lo=1)
    dtype = DTYPES[_choice(f"{where}.dtype", options.get("dtype", "float32"), DTYPES)]
    for name in (CHECKPOINT, MED_CONFIG):
        if not (folder / name).is_file():
            raise ConfigError(field, f"{folder} has no {name}")
    try:
        state = torch.load(folder / CHECKPOINT, map_location="cpu", weights_only=True)
        med = json.loads((folder / MED_CONFIG).read_text())
    except Exception as exc:
        raise ConfigError(field, f"could not read {folder}: {exc}") from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(field, f"{folder / CHECKPOINT} does not hold a state dict of tensors")
    if not isinstance(med, Mapping):
        raise ConfigError(field, f"{folder / MED_CONFIG} is not a JSON object")

    from transformers import BlipTextModel, BlipVisionModel

    vision_state, text_state, head_state = split_checkpoint(field, state)
    vision_config = _vision_config(field, vision_state)
    text_config = _text_config(field, med, vision_config.hidden_size)
    with torch.device("meta"):  # every weight comes from the checkpoint
        vision = BlipVisionModel(vision_config)
        text = BlipTextModel(text_config, add_pooling_layer=False)
    _load_part(field, vision, vision_state, "visual encoder (blip.visual_encoder)")
    _load_part(field, text, text_state, "text encoder (blip.text_encoder)")
    head = [
        (w.to(device), b.to(device))
        for w, b in mlp_layers(field, head_state, int(text_config.hidden_size))
    ]
    tokenizer = _tokenizer(tokenizer_field, tokenizer_folder)
    if len(tokenizer) > text_config.vocab_size:
        raise ConfigError(
            tokenizer_field,
            f"the tokenizer has {len(tokenizer)} tokens, the text encoder {text_config.vocab_size}",
        )
    for model in (vision, text):
        model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    image_size = int(vision_config.image_size)

    @torch.no_grad()
    def chunk(images: Tensor, prompts: Sequence[str]) -> Tensor:
        pixels = normalised(
            resized_crop(as_rgb_bytes(images.to(device)), image_size), CLIP_MEAN, CLIP_STD
        )
        image_tokens = vision(pixel_values=pixels.to(dtype)).last_hidden_state  # (B, N+1, Dv)
        tokens = tokenizer(
            list(prompts),
            padding="max_length",
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
        ).to(device)
        states = text(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            encoder_hidden_states=image_tokens,
            is_decoder=False,  # bidirectional, as BLIP's `mode='multimodal'` encoder
        ).last_hidden_state  # (B, 35, D)
        x = states[:, 0].float()  # (B, D): the [CLS] state
        for weight, bias in head:
            x = F.linear(x, weight, bias)  # no nonlinearity between (ImageReward.py MLP)
        return ((x[:, 0] - REWARD_MEAN) / REWARD_STD).cpu()  # (B,)

    def imagereward(images: Tensor, prompts: Sequence[str], metadata: Metadata = ()) -> Tensor:
        metadata = metadata or [{} for _ in prompts]  # no dataset rows: every image gets {}
        if not len(prompts) == len(metadata) == images.shape[0]:
            raise ValueError(
                f"got {images.shape[0]} images, {len(prompts)} prompts and {len(metadata)} "
                "metadata rows"
            )
        parts = [
            chunk(images[start : start + batch_size], prompts[start : start + batch_size])
            for start in range(0, len(prompts), batch_size)
        ]
        return torch.cat(parts) if parts else torch.zeros(0)

    return imagereward
