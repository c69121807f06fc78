"""Pre-training the shipped digits model: flow matching (or epsilon prediction) on 16 x 16 digits.

    treegrpo pretrain digits        # ~minutes on 2 CPU cores; writes the shipped weights
    treegrpo pretrain digits-ddim

Every random draw comes from one seeded generator, so the same command gives the same weights.
The step count is chosen so that the base model is good but imperfect: samples are recognisable
and the digit judge agrees with the prompt in roughly 60-85% of cases, leaving RL room to show a
gain. Prompts use every phrasing, held-out ones included, with 10% dropped to "" for CFG.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from treegrpo.data import load_digit_images
from treegrpo.models.digits import build_transformer, ddpm_alphas_cumprod, make_adapter
from treegrpo.models.sd3 import SD3StyleAdapter
from treegrpo.presets import PRESETS
from treegrpo.prompts import DIGIT_TEMPLATES, DIGIT_WORDS, HELDOUT_DIGIT_TEMPLATES
from treegrpo.rollout import sample_ode

ALL_TEMPLATES = DIGIT_TEMPLATES + HELDOUT_DIGIT_TEMPLATES


@dataclass(frozen=True)
class PretrainSettings:
    steps: int = 1200
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    ema: float = 0.995
    cfg_dropout: float = 0.1
    # Share of images shown with another digit's prompt. The model then learns clean digits but
    # follows its prompt only ~75% of the time at CFG 1: a base with room for RL to show a gain.
    label_noise: float = 0.3
    seed: int = 0


def class_prompts() -> list[list[str]]:
    """prompts[digit] = every phrasing of that digit."""
    return [
        [t.format(word=word, digit=digit) for t in ALL_TEMPLATES]
        for digit, word in enumerate(DIGIT_WORDS)
    ]


def pretrain_digits(
    variant: str,
    settings: PretrainSettings,
    on_step: Callable[[int, float, torch.nn.Module], None] | None = None,
) -> SD3StyleAdapter:
    """Train from scratch; returns the EMA model as an adapter (on the CPU).

    `on_step(step, loss, ema_transformer)` runs after every optimizer step.
    """
    generator = torch.Generator().manual_seed(settings.seed)
    images, labels = load_digit_images()  # (N, 1, 16, 16) in [-1, 1]
    transformer = build_transformer(settings.seed)
    adapter = make_adapter(variant, transformer, torch.device("cpu"), torch.float32)
    prompts = class_prompts()
    flat_prompts = [p for row in prompts for p in row] + [""]
    table = adapter.encode_prompts(flat_prompts)  # rows: digit * templates + template; last ""
    tokens, pooled = table.tensors["encoder_hidden_states"], table.tensors["pooled_projections"]
    per_class = len(ALL_TEMPLATES)
    alphas = ddpm_alphas_cumprod().float()
    ema = copy.deepcopy(transformer).requires_grad_(False)
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=settings.lr, weight_decay=0.0)
    transformer.train()
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * min(1.0, (step + 1) / settings.warmup)
        index = torch.randint(len(images), (settings.batch_size,), generator=generator)
        x0 = images[index]  # (B, 1, 16, 16)
        template = torch.randint(per_class, (settings.batch_size,), generator=generator)
        shown = labels[index]
        relabel = torch.rand(settings.batch_size, generator=generator) < settings.label_noise
        other = (shown + torch.randint(1, 10, shown.shape, generator=generator)) % 10
        shown = torch.where(relabel, other, shown)
        rows = shown * per_class + template
        dropped = torch.rand(settings.batch_size, generator=generator) < settings.cfg_dropout
        rows = torch.where(dropped, torch.full_like(rows, len(flat_prompts) - 1), rows)
        noise = torch.randn(x0.shape, generator=generator)
        if variant == "digits":
            # Rectified flow with logit-normal times (SD3): x_t = (1 - s) x0 + s n, v = n - x0.
            sigma = torch.sigmoid(torch.randn(settings.batch_size, generator=generator))
            s = sigma[:, None, None, None]
            x_t, target, timestep = (1 - s) * x0 + s * noise, noise - x0, sigma * 1000.0
        else:
            # DDPM: x_t = sqrt(a) x0 + sqrt(1 - a) n, predict n.
            t = torch.randint(len(alphas), (settings.batch_size,), generator=generator)
            a = alphas[t][:, None, None, None]
            x_t, target, timestep = a.sqrt() * x0 + (1 - a).sqrt() * noise, noise, t.float()
        out = transformer(
            hidden_states=x_t,
            timestep=timestep,
            encoder_hidden_states=tokens[rows],
            pooled_projections=pooled[rows],
            return_dict=False,
        )[0]
        loss = torch.nn.functional.mse_loss(out, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), transformer.parameters(), strict=True):
                e.lerp_(p, 1.0 - settings.ema)
        if on_step is not None:
            on_step(step + 1, float(loss.detach()), ema)
    return make_adapter(variant, ema.eval(), torch.device("cpu"), torch.float32)


# Judged as the digits presets sample: T = 10 ODE steps at their CFG scale.
PRESET_SAMPLING = PRESETS["digits-treegrpo"]["sampling"]


@torch.no_grad()
def judge_agreement(
    adapter: SD3StyleAdapter,
    count: int = 100,
    steps: int = PRESET_SAMPLING["steps"],
    cfg_scale: float = PRESET_SAMPLING["cfg_scale"],
    seed: int = 1234,
) -> tuple[float, float, Tensor, list[str]]:
    """Sample `count` fixed prompts (every phrasing in turn) with the ODE sampler; returns the
    fraction the judge classifies as the prompt's digit, the mean judge reward, the images and
    the prompts."""
    from treegrpo.rewards.digits import digit_judge, digit_probabilities

    flat = [p for row in class_prompts() for p in row]
    prompts = [flat[(i * 7) % len(flat)] for i in range(count)]  # a fixed spread over classes
    generator = torch.Generator().manual_seed(seed)
    initial = torch.randn((count, *adapter.latent_shape), generator=generator)
    schedule = adapter.make_schedule(steps)
    latents = sample_ode(adapter, schedule, adapter.encode_prompts(prompts), initial, cfg_scale)
    images = adapter.decode(latents)
    from treegrpo.prompts import digit_of_prompt

    wanted = torch.tensor([digit_of_prompt(p) for p in prompts])
    agreement = float((digit_probabilities(images).argmax(1) == wanted).float().mean())
    return agreement, float(digit_judge(images, prompts).mean()), images, prompts
