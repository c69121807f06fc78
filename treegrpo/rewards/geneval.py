"""geneval: Flow-GRPO's GenEval reward on transformers' Mask2Former (objects) and CLIP (colours).

Each image is checked against its prompt's GenEval metadata (treegrpo/rewards/geneval_rules.py:
the rules, constants and scores). The models are those of GenEval, run in transformers:

- detector: a `Mask2FormerForUniversalSegmentation` COCO instance-segmentation model (`path`: a
  local folder or a cached hub id, e.g. `facebook/mask2former-swin-small-coco-instance`). GenEval
  runs mmdetection's Mask2Former Swin-S (`mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco`). Same
  architecture, classes and outputs, but not the same weights, so scores near the 0.3 / 0.9
  thresholds can move (docs/FIDELITY.md says exactly how).
- colour: a transformers `CLIPModel` (`clip_path`), GenEval's being OpenAI's ViT-L/14
  (`openai/clip-vit-large-patch14` holds the same weights). Zero-shot over the 10 colours with
  "a photo of a {c} {class}", "a photo of a {c}-colored {class}", "a photo of a {c} object"
  (each colour's text embeddings averaged over the three, renormalised); the image crop is the
  object's mask composited on grey #999, cut to its box.

Detection post-processing is done here, at the image's own resolution, as mmdetection's
(`MaskFormerFusionHead.instance_postprocess` with `rescale=True`), not with transformers'
`post_process_instance_segmentation` (which squeezes masks through a fixed size):

    input   = the 8-bit image, shortest side to `input_size` (800; longest <= 1333), ImageNet
              mean/std (or the folder's preprocessor_config.json), zero-padded to a multiple of 32
    masks   = mask logits (Q, h/4, w/4) -> bilinear to the padded input -> cropped to the image
              part -> bilinear to the image's size (H, W)
    scores  = softmax over classes + no-object, no-object dropped: (Q, C); top 100 of Q x C
    each    = class score x mean sigmoid of its mask logits inside (logit > 0); box = the mask's
              extent (x1, y1, x2 + 1, y2 + 1)

Only candidates whose class score passes the rule's threshold are upsampled: a mask score is at
most 1, so no other candidate can pass.

Options (`reward_options.geneval`): `path` (required), `clip_path` (required), `mode` (`partial`,
default: Flow-GRPO's training score; `strict`: 1 when strictly correct, as its eval's
`strict_rewards`; `official`: 1 when GenEval's own rule holds), `input_size` (default 800),
`max_input_size` (default 1333), `batch_size` (images per detector pass, default 4), `dtype`
(float32 | float16 | bfloat16, default float32). Every row's metadata must carry `tag` and
`include` (names.REQUIRED_METADATA).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from treegrpo.config import ConfigError, _choice, _int
from treegrpo.rewards import geneval_rules as rules
from treegrpo.rewards.clip import DTYPES, ClipEncoder, _check_keys, _folder, load_clip_encoder
from treegrpo.rewards.image_ops import as_rgb_bytes, normalised, resized_crop
from treegrpo.rewards.signature import Metadata, RewardFn

MODES = ("partial", "strict", "official")
OPTIONS = ("path", "clip_path", "mode", "input_size", "max_input_size", "batch_size", "dtype")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # mmdet: mean=[123.675, 116.28, 103.53] / 255
IMAGENET_STD = (0.229, 0.224, 0.225)  # mmdet: std=[58.395, 57.12, 57.375] / 255
MAX_PER_IMAGE = 100  # mmdet test_cfg max_per_image
SIZE_DIVISOR = 32
GREY = 0x99 / 255  # GenEval's crop background "#999"
COLOUR_TEMPLATES = (
    "a photo of a {c} {cls}",
    "a photo of a {c}-colored {cls}",
    "a photo of a {c} object",
)


def detector_input(image: Tensor, size: int, max_size: int) -> tuple[Tensor, tuple[int, int]]:
    """(3, H, W) in [0, 1] -> (3, h, w) resized so min(h, w) = size, max(h, w) <= max_size
    (keep ratio, bilinear), and (h, w). Normalising and padding come after."""
    height, width = image.shape[-2:]
    # mmcv's imrescale: one factor for both sides, each rounded half up.
    scale = min(size / min(height, width), max_size / max(height, width))
    new = (int(height * scale + 0.5), int(width * scale + 0.5))
    if new != (height, width):
        image = F.interpolate(image[None], size=new, mode="bilinear", align_corners=False)[0]
    return image.clamp(0, 1), new


def masks_to_boxes(masks: Tensor) -> Tensor:
    """(K, H, W) bool -> (K, 4) float (x1, y1, x2 + 1, y2 + 1); zeros for an empty mask."""
    boxes = torch.zeros(masks.shape[0], 4)
    cols = masks.any(dim=1)  # (K, W)
    rows = masks.any(dim=2)  # (K, H)
    for i in range(masks.shape[0]):
        xs, ys = cols[i].nonzero().flatten(), rows[i].nonzero().flatten()
        if len(xs) and len(ys):
            boxes[i] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
    return boxes


def instances(
    class_logits: Tensor,
    mask_logits: Tensor,
    padded: tuple[int, int],
    resized: tuple[int, int],
    image: tuple[int, int],
    min_score: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One image's instances as mmdetection's Mask2Former gives them, those whose class score
    exceeds `min_score`: (labels (K,), scores (K,), boxes (K, 4), masks (K, H, W) bool).

    class_logits (Q, C + 1), the last being no-object; mask_logits (Q, h/4, w/4) over the padded
    input `padded`, whose top-left `resized` part is the image, resized from `image` (H, W)."""
    num_classes = class_logits.shape[-1] - 1
    probs = class_logits.float().softmax(-1)[:, :num_classes]  # (Q, C)
    top, index = probs.flatten().topk(min(MAX_PER_IMAGE, probs.numel()))
    keep = top > min_score
    top, index = top[keep], index[keep]
    labels, queries = index % num_classes, index // num_classes
    if not len(index):
        empty = torch.zeros(0, *image, dtype=torch.bool)
        return labels, top, torch.zeros(0, 4), empty
    logits = mask_logits[queries].float()[:, None]  # (K, 1, h/4, w/4)
    logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
    logits = logits[:, :, : resized[0], : resized[1]]  # the image part of the padded input
    logits = F.interpolate(logits, size=image, mode="bilinear", align_corners=False)[:, 0]
    binary = logits > 0  # (K, H, W)
    inside = binary.flatten(1).float()
    mask_scores = (logits.sigmoid().flatten(1) * inside).sum(1) / (inside.sum(1) + 1e-6)
    return labels, top * mask_scores.to(top.device), masks_to_boxes(binary.cpu()), binary


def _mask2former(
    field: str, value: Any, device: torch.device, dtype: torch.dtype
) -> tuple[Any, Path]:
    folder = _folder(field, value, "a transformers Mask2Former COCO instance model")
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(field, f"{folder} holds no Mask2Former model: {exc}") from None
    if model_type != "mask2former":
        raise ConfigError(
            field, f"{folder} holds model_type {model_type!r}, expected 'mask2former'"
        )
    from transformers import Mask2FormerForUniversalSegmentation

    try:
        model, info = Mask2FormerForUniversalSegmentation.from_pretrained(
            folder, local_files_only=True, dtype=dtype, output_loading_info=True
        )
    except Exception as exc:
        raise ConfigError(field, f"could not load Mask2Former from {folder}: {exc}") from exc
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ConfigError(field, f"{folder}: {len(missing)} weights missing, e.g. {missing[:3]}")
    return model.to(device).eval().requires_grad_(False), folder


def _stats(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The folder's image_mean / image_std (on a 0-1 scale), else ImageNet's."""
    try:
        config = json.loads((folder / "preprocessor_config.json").read_text())
        mean = tuple(float(v) for v in config["image_mean"])
        std = tuple(float(v) for v in config["image_std"])
    except (OSError, ValueError, KeyError, TypeError):
        return IMAGENET_MEAN, IMAGENET_STD
    if len(mean) != 3 or len(std) != 3:
        return IMAGENET_MEAN, IMAGENET_STD
    if max(mean) > 1:  # given on the 0-255 scale, as mmdet's config writes them
        mean, std = tuple(v / 255 for v in mean), tuple(v / 255 for v in std)
    return mean, std


class ColourClassifier:
    """GenEval's colour zero-shot on a CLIP encoder (module docstring); text weights cached."""

    def __init__(self, encoder: ClipEncoder) -> None:
        self.encoder = encoder
        self._weights: dict[str, Tensor] = {}

    def weights(self, name: str) -> Tensor:
        """(10, D): per colour, the mean of its three template embeddings, renormalised."""
        if name not in self._weights:
            texts = [t.format(c=c, cls=name) for c in rules.COLORS for t in COLOUR_TEMPLATES]
            embeds = self.encoder.text_embeds(texts)  # (30, D), unit norm
            embeds = embeds.view(len(rules.COLORS), len(COLOUR_TEMPLATES), -1)  # (10, 3, D)
            self._weights[name] = F.normalize(embeds.mean(1), dim=-1)
        return self._weights[name]

    def __call__(self, image: Tensor, objects: Sequence[rules.Detection], name: str) -> list[str]:
        """One colour per object of class `name` in `image` (3, H, W)."""
        crops = []
        for detection in objects:
            x = image
            if detection.mask is not None:
                mask = detection.mask.to(image.device)[None]  # (1, H, W)
                x = torch.where(mask, image, torch.full_like(image, GREY))  # object on grey
            x1, y1, x2, y2 = (int(v) for v in detection.box)
            crop = x[:, y1:y2, x1:x2][None]  # (1, 3, h, w): cut to its box
            crops.append(resized_crop(crop, self.encoder.image_size))
        embeds = self.encoder.image_embeds(torch.cat(crops))  # (N, D), unit norm
        picks = (embeds @ self.weights(name).T).argmax(-1)  # (N,)
        return [rules.COLORS[int(i)] for i in picks]


def geneval_factory(device: torch.device, options: Mapping[str, Any]) -> RewardFn:
    """Registry factory for `geneval` (module docstring)."""
    _check_keys("geneval", options, OPTIONS)
    where = "reward_options.geneval"
    mode = _choice(f"{where}.mode", options.get("mode", "partial"), MODES)
    size = _int(f"{where}.input_size", options.get("input_size", 800), lo=32, hi=4096)
    max_size = _int(
        f"{where}.max_input_size", options.get("max_input_size", 1333), lo=size, hi=8192
    )
    batch_size = _int(f"{where}.batch_size", options.get("batch_size", 4), lo=1)
    dtype = DTYPES[_choice(f"{where}.dtype", options.get("dtype", "float32"), DTYPES)]
    if options.get("clip_path") is None:
        raise ConfigError(f"{where}.clip_path", "missing: give the CLIP ViT-L/14 folder or hub id")
    detector, folder = _mask2former(f"{where}.path", options.get("path"), device, dtype)
    labels = int(detector.config.num_labels)
    # COCO's 80 in order get GenEval's names; another detector's classes keep its own.
    classes: tuple[str, ...] = rules.CLASS_NAMES
    if labels != len(rules.CLASS_NAMES):
        classes = tuple(str(detector.config.id2label[i]) for i in range(labels))
    mean, std = _stats(folder)
    try:
        encoder = load_clip_encoder(
            "geneval",
            device,
            {"path": options["clip_path"], "dtype": options.get("dtype", "float32")},
        )
    except ConfigError as exc:
        raise ConfigError(exc.field.replace(".path", ".clip_path"), exc.reason) from None
    colours_of = ColourClassifier(encoder)

    @torch.no_grad()
    def detect(images: Tensor, tags: Sequence[str]) -> list[dict[str, list[rules.Detection]]]:
        """Per image: class name -> detections above the image's tag threshold, best first."""
        inputs, shapes = zip(
            *(detector_input(image, size, max_size) for image in images), strict=True
        )
        height = -(-max(s[0] for s in shapes) // SIZE_DIVISOR) * SIZE_DIVISOR
        width = -(-max(s[1] for s in shapes) // SIZE_DIVISOR) * SIZE_DIVISOR
        pixels = torch.zeros(len(inputs), 3, height, width, device=images.device)
        pixel_mask = torch.zeros(len(inputs), height, width, dtype=torch.long, device=images.device)
        for i, (x, (h, w)) in enumerate(zip(inputs, shapes, strict=True)):
            pixels[i, :, :h, :w] = normalised(x[None], mean, std)[0]
            pixel_mask[i, :h, :w] = 1
        out = detector(pixel_values=pixels.to(dtype), pixel_mask=pixel_mask)
        found = []
        for i, tag in enumerate(tags):
            threshold = rules.COUNTING_THRESHOLD if tag == "counting" else rules.THRESHOLD
            label, score, boxes, masks = instances(
                out.class_queries_logits[i],
                out.masks_queries_logits[i],
                (height, width),
                shapes[i],
                (int(images.shape[-2]), int(images.shape[-1])),
                threshold,
            )
            candidates: dict[str, list[rules.Detection]] = {}
            for k in range(len(label)):
                box = (
                    float(boxes[k, 0]),
                    float(boxes[k, 1]),
                    float(boxes[k, 2]),
                    float(boxes[k, 3]),
                )
                candidates.setdefault(classes[int(label[k])], []).append(
                    rules.Detection(box=box, score=float(score[k]), mask=masks[k])
                )
            found.append(rules.kept(candidates, tag))
        return found

    def geneval(images: Tensor, prompts: Sequence[str], metadata: Metadata = ()) -> Tensor:
        metadata = metadata or [{} for _ in prompts]  # no dataset rows: every image gets {}
        if not len(prompts) == len(metadata) == images.shape[0]:
            raise ValueError(
                f"got {images.shape[0]} images, {len(prompts)} prompts and {len(metadata)} "
                "metadata rows"
            )
        for prompt, row in zip(prompts, metadata, strict=True):
            try:
                rules.check_metadata(row, classes)
            except ValueError as exc:
                raise ValueError(f"geneval cannot judge prompt {prompt!r}: {exc}") from None
        pixels = as_rgb_bytes(images.to(device))  # (B, 3, H, W) on 8-bit levels
        scores = []
        for start in range(0, len(prompts), batch_size):
            chunk = pixels[start : start + batch_size]
            rows = metadata[start : start + batch_size]
            detected = detect(chunk, [row["tag"] for row in rows])
            for image, row, objects in zip(chunk, rows, detected, strict=True):
                colours = lambda found, name, image=image: colours_of(image, found, name)  # noqa: E731
                if mode == "official":
                    scores.append(float(rules.official_correct(objects, row, colours)))
                else:
                    strict, partial = rules.partial_credit(objects, row, colours)
                    scores.append(float(strict) if mode == "strict" else partial)
        return torch.tensor(scores, dtype=torch.float32)

    return geneval
