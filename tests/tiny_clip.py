"""A tiny random-init transformers CLIPModel folder (text + vision towers, tokenizer), saved
offline, for the CLIP-family rewards and the hub-cache tests."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_clip(folder: Path) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    # Byte-level BPE vocabulary with no merges: every letter a token, "</w>" marks a word's end.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in "abcdefghijklmnopqrstuvwxyz0123456789.,!?'":
        vocab.setdefault(symbol, len(vocab))
        vocab.setdefault(symbol + "</w>", len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 24,
            "bos_token_id": 0,
            "eos_token_id": 1,  # pooling takes the first end-of-text token
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
