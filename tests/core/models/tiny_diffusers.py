"""Tiny random-init SD3 and SD1.5 pipelines, saved as real diffusers folders, for loader tests.

Everything is built offline: the tokenizers come from a character-level vocabulary written here,
the models from small configs. `save_sd3` / `save_sd15` write the folder with the pipeline's own
save_pretrained, so model_index.json is exactly what diffusers writes for a real model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PNDMScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from torch import Tensor, nn
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from treegrpo.callbacks import Callback
from treegrpo.config import RunConfig, resolve_config

LETTERS = "abcdefghijklmnopqrstuvwxyz"
CLIP_TOKENS = 16  # tokens per prompt (77 in real CLIP)
PROMPTS = ["a red cat", "a blue dog", "green grass"]

PipelineT = TypeVar("PipelineT", StableDiffusion3Pipeline, StableDiffusionPipeline, FluxPipeline)
# FLUX.1-dev's scheduler_config.json: shift 3 with dynamic shifting from the token count.
FLUX_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}


def clip_tokenizer() -> CLIPTokenizer:
    """Character-level BPE without merges: every letter is a token, `x</w>` ends a word."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in LETTERS:
        vocab[letter] = len(vocab)
    for letter in LETTERS:
        vocab[f"{letter}</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_TOKENS)


def t5_tokenizer() -> T5Tokenizer:
    """A unigram vocabulary of single letters, with and without the word-start marker."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    pieces += [(f"\u2581{letter}", -1.0) for letter in LETTERS]
    pieces += [(letter, -2.0) for letter in LETTERS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=64)


def clip_config(hidden: int, projection: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=2 + 2 * len(LETTERS),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=CLIP_TOKENS,
        projection_dim=projection,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


def tiny_vae() -> AutoencoderKL:
    """One block, so no downsampling: 8x8 latents decode to 8x8 RGB images."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(8,),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=2,
        sample_size=8,
        # SD3's VAE normalisation, so the loader's shift handling is exercised.
        scaling_factor=1.5305,
        shift_factor=0.0609,
    )


def eval_mode(pipe: PipelineT) -> PipelineT:
    """Models built from configs start in train mode (T5 dropout is on); loaded ones in eval."""
    for component in pipe.components.values():
        if isinstance(component, nn.Module):
            component.eval()
    return pipe


def save_sd3(folder: Path, with_t5: bool = True, seed: int = 0) -> StableDiffusion3Pipeline:
    """CLIP-L (8 wide) + CLIP-G (16 wide) + optional T5 (32 wide), MMDiT with 1 layer."""
    torch.manual_seed(seed)
    t5 = None
    if with_t5:
        t5_tok = t5_tokenizer()
        t5 = T5EncoderModel(
            T5Config(vocab_size=len(t5_tok), d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
        )
    pipe = StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=4,
            num_layers=1,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=32,
            caption_projection_dim=16,
            pooled_projection_dim=64,
            out_channels=4,
            pos_embed_max_size=8,
        ),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_vae(),
        text_encoder=CLIPTextModelWithProjection(clip_config(8, 32)),
        tokenizer=clip_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(clip_config(16, 32)),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5,
        tokenizer_3=t5_tok if with_t5 else None,
    )
    pipe.save_pretrained(folder)
    return eval_mode(pipe)


def save_flux(folder: Path, seed: int = 0, guidance_embeds: bool = True) -> FluxPipeline:
    """FLUX.1's layout: CLIP (32 wide, pooled) + T5 (32 wide), a 1+1-block FLUX transformer on
    4-channel latents packed 2x2 (16 channels in), FLUX.1-dev's scheduler config."""
    torch.manual_seed(seed)
    t5_tok = t5_tokenizer()
    pipe = FluxPipeline(
        transformer=FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=guidance_embeds,
            axes_dims_rope=(4, 6, 6),
        ),
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(clip_config(32, 32)),
        tokenizer=clip_tokenizer(),
        text_encoder_2=T5EncoderModel(
            T5Config(vocab_size=len(t5_tok), d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
        ),
        tokenizer_2=t5_tok,
    )
    pipe.save_pretrained(folder)
    return eval_mode(pipe)


def save_sd15(
    folder: Path, seed: int = 0, prediction_type: str = "epsilon"
) -> StableDiffusionPipeline:
    """A two-level UNet with cross-attention to a 32-wide CLIP, and SD1.5's own scheduler config
    (PNDM, scaled-linear betas, steps_offset 1)."""
    torch.manual_seed(seed)
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(clip_config(32, 32)),
        tokenizer=clip_tokenizer(),
        unet=UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=2,
            norm_num_groups=4,
        ),
        scheduler=PNDMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            skip_prk_steps=True,
            set_alpha_to_one=False,
            prediction_type=prediction_type,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return eval_mode(pipe)


def run_config(model: str, **overrides: Any) -> RunConfig:
    """One small TreeGRPO epoch: 2 prompts x 2^2 leaves, 4 steps, brightness reward."""
    base: dict[str, Any] = {
        "algorithm": "treegrpo",
        "model": model,
        "device": "cpu",
        "reward": "brightness",
        "prompts": PROMPTS,
        "prompts_per_epoch": 2,
        "epochs": 1,
        "sampling.steps": 4,
        "tree.k": 2,
        "tree.depth": 2,
        "train.lr": 1e-3,
    }
    base.update(overrides)
    return resolve_config(overrides=base)


class MetricsRecorder(Callback):
    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch > 0:  # epoch 0 is the optional gallery before training
            self.epochs.append(metrics)


def assert_finite(metrics: dict[str, float]) -> None:
    bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
    assert not bad, f"non-finite metrics: {bad}"


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict[str, Tensor], module: nn.Module) -> set[str]:
    return {
        name for name, p in module.named_parameters() if not torch.equal(before[name], p.detach())
    }


def assert_same_weights(saved: nn.Module, loaded: nn.Module) -> None:
    expected, actual = saved.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name].to(tensor.dtype)), name


@contextmanager
def single_thread() -> Iterator[None]:
    """Tiny tensors run fastest on one thread; two spin-waiting threads on a busy 2-core
    machine made one of these tests 40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
