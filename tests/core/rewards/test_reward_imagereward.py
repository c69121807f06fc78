"""The `imagereward` port: a tiny random ImageReward saved in the ORIGINAL checkpoint's layout
(THUDM/ImageReward key names, written out by hand below), loaded by the port and checked against
a plain-torch forward of the original architecture (BLIP vit.py + med.py + the MLP head)."""

from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import BertTokenizer

from treegrpo.config import ConfigError
from treegrpo.rewards import imagereward
from treegrpo.rewards.image_ops import as_rgb_bytes, normalised, resized_crop
from treegrpo.rewards.registry import load_rewards

VIT_WIDTH, VIT_DEPTH, PATCH, IMAGE = 128, 2, 8, 32  # 2 heads of 64, a 4 x 4 patch grid
TEXT_WIDTH, TEXT_DEPTH, TEXT_HEADS, TEXT_FF = 32, 2, 2, 48
WORDS = ["a", "red", "cat", "blue", "dog", "on", "the", "mat", "photo", "of"]
HEAD_DIMS = [TEXT_WIDTH, 16, 8, 4, 2, 1]  # the original: 768, 1024, 128, 64, 16, 1


def _original_state(seed: int, vocab: int) -> dict[str, Tensor]:
    """Random weights under ImageReward.pt's own key names (ImageReward.py, BLIP vit.py, med.py)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.2) -> Tensor:
        return torch.randn(*shape, generator=g) * scale

    def ln(prefix: str, width: int) -> dict[str, Tensor]:
        return {f"{prefix}.weight": 1 + r(width), f"{prefix}.bias": r(width)}

    def lin(prefix: str, out: int, inp: int) -> dict[str, Tensor]:
        return {f"{prefix}.weight": r(out, inp, scale=inp**-0.5), f"{prefix}.bias": r(out)}

    v = "blip.visual_encoder"
    s: dict[str, Tensor] = {
        f"{v}.cls_token": r(1, 1, VIT_WIDTH),
        f"{v}.pos_embed": r(1, (IMAGE // PATCH) ** 2 + 1, VIT_WIDTH),
        f"{v}.patch_embed.proj.weight": r(VIT_WIDTH, 3, PATCH, PATCH, scale=0.1),
        f"{v}.patch_embed.proj.bias": r(VIT_WIDTH),
        **ln(f"{v}.norm", VIT_WIDTH),
    }
    for i in range(VIT_DEPTH):
        b = f"{v}.blocks.{i}"
        s |= ln(f"{b}.norm1", VIT_WIDTH) | ln(f"{b}.norm2", VIT_WIDTH)
        s |= lin(f"{b}.attn.qkv", 3 * VIT_WIDTH, VIT_WIDTH) | lin(
            f"{b}.attn.proj", VIT_WIDTH, VIT_WIDTH
        )
        s |= lin(f"{b}.mlp.fc1", 4 * VIT_WIDTH, VIT_WIDTH) | lin(
            f"{b}.mlp.fc2", VIT_WIDTH, 4 * VIT_WIDTH
        )
    t = "blip.text_encoder"
    s |= {
        f"{t}.embeddings.word_embeddings.weight": r(vocab, TEXT_WIDTH),
        f"{t}.embeddings.position_embeddings.weight": r(40, TEXT_WIDTH),
        f"{t}.embeddings.position_ids": torch.arange(40)[None],  # a buffer older BERTs saved
        **ln(f"{t}.embeddings.LayerNorm", TEXT_WIDTH),
    }
    for i in range(TEXT_DEPTH):
        b = f"{t}.encoder.layer.{i}"
        for part, source in (("attention", TEXT_WIDTH), ("crossattention", VIT_WIDTH)):
            s |= lin(f"{b}.{part}.self.query", TEXT_WIDTH, TEXT_WIDTH)
            s |= lin(f"{b}.{part}.self.key", TEXT_WIDTH, source)
            s |= lin(f"{b}.{part}.self.value", TEXT_WIDTH, source)
            s |= lin(f"{b}.{part}.output.dense", TEXT_WIDTH, TEXT_WIDTH)
            s |= ln(f"{b}.{part}.output.LayerNorm", TEXT_WIDTH)
        s |= lin(f"{b}.intermediate.dense", TEXT_FF, TEXT_WIDTH)
        s |= lin(f"{b}.output.dense", TEXT_WIDTH, TEXT_FF) | ln(f"{b}.output.LayerNorm", TEXT_WIDTH)
    for index, (inp, out) in zip((0, 2, 4, 6, 7), pairwise(HEAD_DIMS), strict=True):
        s |= lin(f"mlp.layers.{index}", out, inp)
    # BLIP's contrastive projections: in the checkpoint, unused by the score.
    s |= lin("blip.vision_proj", 16, VIT_WIDTH) | lin("blip.text_proj", 16, TEXT_WIDTH)
    return s


def _write_model(folder: Path, seed: int, state: dict[str, Tensor] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    med = {
        "architectures": ["BertModel"],
        "hidden_act": "gelu",
        "hidden_size": TEXT_WIDTH,
        "intermediate_size": TEXT_FF,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 40,
        "model_type": "bert",
        "num_attention_heads": TEXT_HEADS,
        "num_hidden_layers": TEXT_DEPTH,
        "pad_token_id": 0,
        "type_vocab_size": 2,
        "vocab_size": len(vocab) + 2,  # + [DEC], [ENC], as 30522 + 2 = 30524 in the original
        "encoder_width": TEXT_WIDTH,  # overwritten by the ViT's width, as blip_pretrain.py does
        "add_cross_attention": True,
    }
    (folder / "med_config.json").write_text(json.dumps(med))
    torch.save(
        state if state is not None else _original_state(seed, len(vocab) + 2),
        folder / "ImageReward.pt",
    )
    return folder


def _attention(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None) -> Tensor:
    """(B, Lq, D), (B, Lk, D) x2 -> (B, Lq, D): softmax(q k^T / sqrt(d) + mask) v per head."""
    b, lq, d = q.shape
    split = lambda x: x.view(b, x.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // heads)
    if mask is not None:
        scores = scores + mask
    return (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(b, lq, d)


def _reference(s: dict[str, Tensor], pixels: Tensor, ids: Tensor, attn: Tensor) -> Tensor:
    """ImageReward.score by hand, on the original key names."""
    lin = lambda x, p: F.linear(x, s[f"{p}.weight"], s[f"{p}.bias"])  # noqa: E731
    ln = lambda x, p, eps: F.layer_norm(x, x.shape[-1:], s[f"{p}.weight"], s[f"{p}.bias"], eps)  # noqa: E731
    v = "blip.visual_encoder"
    x = F.conv2d(
        pixels, s[f"{v}.patch_embed.proj.weight"], s[f"{v}.patch_embed.proj.bias"], stride=PATCH
    )
    x = x.flatten(2).transpose(1, 2)  # (B, 16, W)
    x = torch.cat([s[f"{v}.cls_token"].expand(x.shape[0], -1, -1), x], 1) + s[f"{v}.pos_embed"]
    for i in range(VIT_DEPTH):
        b = f"{v}.blocks.{i}"
        h = ln(x, f"{b}.norm1", 1e-6)
        q, k, val = lin(h, f"{b}.attn.qkv").chunk(3, dim=-1)
        x = x + lin(_attention(q, k, val, VIT_WIDTH // 64, None), f"{b}.attn.proj")
        x = x + lin(F.gelu(lin(ln(x, f"{b}.norm2", 1e-6), f"{b}.mlp.fc1")), f"{b}.mlp.fc2")
    image = ln(x, f"{v}.norm", 1e-6)  # (B, 17, W)
    t = "blip.text_encoder"
    y = (
        s[f"{t}.embeddings.word_embeddings.weight"][ids]
        + s[f"{t}.embeddings.position_embeddings.weight"][: ids.shape[1]]
    )
    y = ln(y, f"{t}.embeddings.LayerNorm", 1e-12)
    mask = (1.0 - attn[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for i in range(TEXT_DEPTH):
        b = f"{t}.encoder.layer.{i}"
        for part, source, m in (("attention", None, mask), ("crossattention", image, None)):
            kv = y if source is None else source
            a = _attention(
                lin(y, f"{b}.{part}.self.query"),
                lin(kv, f"{b}.{part}.self.key"),
                lin(kv, f"{b}.{part}.self.value"),
                TEXT_HEADS,
                m,
            )
            y = ln(lin(a, f"{b}.{part}.output.dense") + y, f"{b}.{part}.output.LayerNorm", 1e-12)
        ff = lin(F.gelu(lin(y, f"{b}.intermediate.dense")), f"{b}.output.dense")
        y = ln(ff + y, f"{b}.output.LayerNorm", 1e-12)
    r = y[:, 0]
    for index in (0, 2, 4, 6, 7):
        r = lin(r, f"mlp.layers.{index}")
    return (r[:, 0] - 0.16717362830052426) / 1.0333394966054072


def _images() -> Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 3, 48, 40, generator=g)  # (B, 3, H, W): resized and cropped to 32


PROMPTS = ["a red cat on the mat", "a blue dog", "photo of a dog"]


def test_scores_equal_the_original_architecture_on_its_own_keys(tmp_path: Path) -> None:
    folder = _write_model(tmp_path / "ir", seed=1)
    fn = imagereward.imagereward_factory(
        torch.device("cpu"), {"path": str(folder), "batch_size": 2}
    )
    scores = fn(_images(), PROMPTS, [{}] * 3)
    state = torch.load(folder / "ImageReward.pt", weights_only=True)
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    tokens = tokenizer(
        PROMPTS, padding="max_length", truncation=True, max_length=35, return_tensors="pt"
    )
    assert tokens["input_ids"][0, 0] == tokenizer.cls_token_id  # [CLS] first, as the original
    pixels = normalised(
        resized_crop(as_rgb_bytes(_images()), IMAGE), imagereward.CLIP_MEAN, imagereward.CLIP_STD
    )
    expected = _reference(state, pixels, tokens["input_ids"], tokens["attention_mask"])
    assert scores.shape == (3,)
    assert torch.allclose(scores, expected, atol=1e-4), (scores, expected)
    assert scores.std() > 1e-3  # the images and prompts are told apart


def test_the_checkpoint_really_loads(tmp_path: Path) -> None:
    one = imagereward.imagereward_factory(
        torch.device("cpu"), {"path": str(_write_model(tmp_path / "a", 1))}
    )
    two = imagereward.imagereward_factory(
        torch.device("cpu"), {"path": str(_write_model(tmp_path / "b", 2))}
    )
    assert not torch.allclose(one(_images(), PROMPTS, [{}] * 3), two(_images(), PROMPTS, [{}] * 3))
    # Another layout (keys under "model.", as a training checkpoint) loads nothing: refused.
    vocab = len(WORDS) + 5 + 2
    renamed = {f"model.{k}": v for k, v in _original_state(1, vocab).items()}
    with pytest.raises(
        ConfigError, match=r"reward_options\.imagereward\.path.*no part of ImageReward"
    ):
        imagereward.imagereward_factory(
            torch.device("cpu"), {"path": str(_write_model(tmp_path / "c", 1, renamed))}
        )
    # A checkpoint missing one cross-attention weight is refused, naming it.
    partial = _original_state(1, vocab)
    del partial["blip.text_encoder.encoder.layer.1.crossattention.self.key.weight"]
    with pytest.raises(ConfigError, match=r"1 weights missing.*crossattention\.self\.key\.weight"):
        imagereward.imagereward_factory(
            torch.device("cpu"), {"path": str(_write_model(tmp_path / "d", 1, partial))}
        )


def test_registry_entry_and_options(tmp_path: Path) -> None:
    folder = _write_model(tmp_path / "ir", seed=3)
    tokenizer_folder = tmp_path / "bert"
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(tokenizer_folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(ConfigError, match=r"imagereward\.path.*no BERT tokenizer"):
        imagereward.imagereward_factory(torch.device("cpu"), {"path": str(folder)})
    options = {"imagereward": {"path": str(folder), "tokenizer_path": str(tokenizer_folder)}}
    fn = load_rewards({"imagereward": 1.0}, options=options)["imagereward"]
    assert fn(_images()[:1], PROMPTS[:1]).shape == (1,)
    with pytest.raises(ConfigError, match=r"reward_options\.imagereward\.path"):
        imagereward.imagereward_factory(torch.device("cpu"), {})
    with pytest.raises(
        ConfigError, match=r"reward_options\.imagereward\.path.*has no ImageReward\.pt"
    ):
        imagereward.imagereward_factory(torch.device("cpu"), {"path": str(tokenizer_folder)})
    with pytest.raises(ConfigError, match=r"reward_options\.imagereward\.size"):
        imagereward.imagereward_factory(torch.device("cpu"), {"path": str(folder), "size": 1})
