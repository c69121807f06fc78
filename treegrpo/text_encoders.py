"""`train.text_encoders`: where the frozen text encoders live between prompt encodings.

- device: on the run's device throughout (what every run did before this setting).
- offload: in host memory between encodings; each `encode_prompts` call moves them to the run's
  device and back, so the GPU holds them only while one batch of prompts is encoded (FLUX's
  T5-XXL alone is about 9.5 GB in bf16, docs/FIDELITY.md "Text encoders").
- cache: offload, and each distinct prompt is encoded once: its conditioning is kept on the run's
  device and reused, so a run over a fixed prompt set stops calling the encoders at all after
  its first epoch, as the anchors' precomputed embeddings do.

The conditioning is the same in all three: the same encoders run on the same device; a cached
prompt's row is the row its first encoding gave.

    use_text_encoders(adapter, config.train.text_encoders)   # before any encoding
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from treegrpo.config.sections import TextEncoders
from treegrpo.models.base import Conditioning, ModelAdapter

Encode = Callable[[Sequence[str]], Conditioning]
HOST = torch.device("cpu")


def text_encoder_modules(adapter: ModelAdapter) -> list[nn.Module]:
    """The modules inside the adapter's text encoder (`encode_text` of the diffusers adapters:
    CLIP, T5, MiniLM), found through its attributes and their (tokenizer, encoder) pairs; the
    tiny model's hashed embedding has none."""
    found: dict[int, nn.Module] = {}

    def walk(value: object, depth: int) -> Iterator[nn.Module]:
        if isinstance(value, nn.Module):
            yield value
        elif depth and isinstance(value, tuple | list):
            for item in value:
                yield from walk(item, depth - 1)
        elif depth and hasattr(value, "__dict__") and not isinstance(value, type):
            for item in vars(value).values():
                yield from walk(item, depth - 1)

    for module in walk(getattr(adapter, "encode_text", None), 3):
        found.setdefault(id(module), module)
    return list(found.values())


class OffloadedEncoding:
    """`encode` with `modules` on `device` for the call only, in host memory otherwise."""

    def __init__(self, encode: Encode, modules: Sequence[nn.Module], device: torch.device):
        self.encode = encode
        self.modules = list(modules)
        self.device = device
        self.place(HOST)

    def place(self, device: torch.device) -> None:
        for module in self.modules:
            module.to(device)

    def __call__(self, prompts: Sequence[str]) -> Conditioning:
        self.place(self.device)
        try:
            return self.encode(prompts)
        finally:
            self.place(HOST)


class CachedEncoding:
    """`encode` once per distinct prompt; later calls reuse the kept rows."""

    def __init__(self, encode: Encode) -> None:
        self.encode = encode
        self.rows: dict[str, Conditioning] = {}

    def __call__(self, prompts: Sequence[str]) -> Conditioning:
        missing = list(dict.fromkeys(p for p in prompts if p not in self.rows))
        if missing:
            encoded = self.encode(missing)
            for row, prompt in enumerate(missing):
                self.rows[prompt] = encoded.select(torch.tensor([row]))
        return Conditioning.cat([self.rows[prompt] for prompt in prompts])


def use_text_encoders(adapter: ModelAdapter, placement: TextEncoders) -> None:
    """Route every `adapter.encode_prompts` call (training, galleries, the unconditional
    prompt) through `placement`."""
    if placement == "device":
        return
    encode: Encode = OffloadedEncoding(
        adapter.encode_prompts, text_encoder_modules(adapter), adapter.device
    )
    if placement == "cache":
        encode = CachedEncoding(encode)
    # On the instance: every caller of the adapter gets the placement, none needs to know it.
    adapter.encode_prompts = encode  # type: ignore[method-assign, assignment]
