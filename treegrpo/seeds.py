"""Reproducible random streams: every random draw of a run derives from (seed, epoch, stream).

A run resumed from a checkpoint, or split over N ranks, draws exactly what one uninterrupted
process would have drawn, because each purpose (prompt choice, minibatch order, one tree's
noise, the gallery's noise, the LoRA init, a branch job's noise) has its own stream.
"""

from __future__ import annotations

import torch

# Tree (or flat group) i of an epoch draws its noise from stream TREE_NOISE_STREAM + i, so a
# rank can draw its own trees' noise without the others'.
TREE_NOISE_STREAM = 1000
GALLERY_NOISE_STREAM = 99
# The LoRA adapters' initial draw (the same on every rank, so ranks start identical).
LORA_INIT_STREAM = 98
# Evaluation noise: held-out prompt i draws from stream (eval.seed, i, EVAL_NOISE_STREAM), so a
# prompt has the same noises in every evaluation, whatever the run's seed or the prompt count.
EVAL_NOISE_STREAM = 97


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent, reproducible seeds per (run seed, epoch, purpose)."""
    return (seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**62)


def noise_generator(seed: int, epoch: int, tree: int) -> torch.Generator:
    """The generator of tree (or flat group) `tree` of `epoch`: the same on every rank."""
    return torch.Generator().manual_seed(stream_seed(seed, epoch, TREE_NOISE_STREAM + tree))


def eval_generator(eval_seed: int, prompt_index: int) -> torch.Generator:
    """The generator of held-out prompt `prompt_index`'s evaluation noises."""
    return torch.Generator().manual_seed(stream_seed(eval_seed, prompt_index, EVAL_NOISE_STREAM))
