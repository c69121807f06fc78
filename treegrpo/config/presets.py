"""Named starting points for runs. Torch-free: a preset is a dict of config overrides.

- `tiny-*`: seconds on the random-init test model with the brightness reward (tests, smoke runs).
- `digits-*`: the shipped digits model with the digit-judge reward; a CPU shows TreeGRPO's gain
  in minutes. Evaluation uses held-out prompt phrasings.
  Each baseline runs its authors' recipe (docs/TREEGRPO.md §7, docs/FIDELITY.md): its own SDE and eta,
  noise sharing, group size, trained steps, advantage normalisation, KL and optimiser steps per
  iteration. What stays matched across the family is what belongs to the model rather than the
  method: prompts, reward, T, CFG, learning rate and clip range (the originals' lr and clip
  are tuned for SD-scale models).
- `digits-<baseline>-matched`: a matched-budget comparison, labelled as such: the baseline with
  G = k^d = 27, so it makes as many images per iteration as the tree (4 x 27 = 108).
- `sd35-treegrpo`: the paper's Table 1 run on SD3.5-Medium (HPS-v2.1 reward; T = 10, k = 3,
  d = 3, random window r = 0.5, eta 0.7, CFG 4.5, lr 1e-5, clip 1e-4, advantage clip 5);
  `sd35-treegrpo-multi`: Table 2 (0.8 HPS + 0.2 CLIPScore). All sd35-* run at 512 x 512, the
  papers' resolution (Flow-GRPO `config.resolution = 512`).
- `sd35-dancegrpo`, `sd35-flowgrpo`: the baselines' own SD3.5 recipes.
- `flux-dancegrpo`, `flux-mixgrpo`: FLUX.1-dev as DanceGRPO's and MixGRPO's FLUX scripts run it
  (720 x 720, guidance 3.5 with true CFG off, HPS, lr 1e-5, weight decay 1e-4; 16 steps and 16
  prompts per iteration for DanceGRPO, 25 and 32 for MixGRPO); `flux-treegrpo`: TreeGRPO
  (k = d = 3, random window) on DanceGRPO's FLUX setting. The model is the hub id
  black-forest-labs/FLUX.1-dev, read from the local Hugging Face cache.
- `sd15-treegrpo`: SD1.5 with DDIM (eta 1 as DDPO), LoRA rank 16, as DDPO-style SD1.5 runs do.
The SD presets name local folders under ./models; point `model` and `reward_options.*.path` at
your own with `--set`. Every preset evaluates on prompts it never trains on.

Evaluation presets (`eval-*`, for evaluate jobs: `eval.*` settings, held-out prompts):
- `eval-digits`: the digits model on its held-out phrasings, 4 images per prompt, three digits
  rewards (digit_judge, boldness, contrast); minutes on a laptop.
- `eval-treegrpo-table1`: the TreeGRPO paper's Table 1 (HPS-v2.1, ImageReward, Aesthetic,
  CLIPScore on the HPDv2 test split) on SD3.5-Medium, 40 steps, CFG 4.5, 512 x 512.
- `eval-flowgrpo-ocr`, `eval-flowgrpo-geneval`, `eval-flowgrpo-pickscore`: Flow-GRPO's three
  tasks as its scripts/train_sd3.py `eval` runs them (the whole test split, 40 steps, CFG 4.5,
  512 x 512, one image per prompt; config/grpo.py).
The last four name their prompts by dataset id: import the dataset first (`treegrpo dataset
import`). A preset that this build cannot validate is kept in PENDING_PRESETS with the reason
(none today), and asking for one says why (`preset_dict`).
"""

from __future__ import annotations

import copy
from typing import Any

from treegrpo.algorithm_names import ALGORITHMS
from treegrpo.config.merge import deep_merge
from treegrpo.config.run import RunConfig
from treegrpo.errors import ConfigError

_TINY: dict[str, Any] = {
    "model": "tiny-random",
    "reward": "brightness",
    "prompts": "tiny",
    "eval_prompts": "tiny-heldout",
    "prompts_per_epoch": 2,
    "epochs": 2,
    "sampling": {"steps": 6, "cfg_scale": 2.0},
    "tree": {"k": 2, "depth": 2, "window": "random"},
    "flat": {"group_size": 4, "window": 2},
    "train": {"full_lr": 1e-3, "clip_range": 0.2, "minibatches": 2},
}

_DIGITS: dict[str, Any] = {
    "model": "digits",
    "reward": "digit_judge",
    "prompts": "digits",
    "eval_prompts": "digits-heldout",
    "prompts_per_epoch": 4,
    "epochs": 100,
    "checkpoint_every": 10,
    "log_tree_every": 10,
    "sample_every": 10,
    # CFG 1.5: the base model then draws the prompt's digit ~75% of the time (it was pre-trained
    # with 30% mislabelled prompts), which leaves RL room to show its gain.
    "sampling": {"steps": 10, "cfg_scale": 1.5},
    "tree": {"k": 3, "depth": 3, "window": "random", "window_ratio": 0.5},
    "flat": {"group_size": 27},
    # full_lr: the digits model's full fine-tune; lora_lr: what its LoRA runs need (the lr x
    # rank experiment in docs/BENCHMARKS.md: at 1e-4 a rank-4 LoRA does not move the reward).
    "train": {"full_lr": 1e-4, "lora_lr": 1e-3, "clip_range": 1e-3, "minibatches": 2},
}

# The authors' recipes, as far as they are the method's and not the model's (docs/FIDELITY.md).
_RECIPES: dict[str, dict[str, Any]] = {
    "treegrpo": {},
    # DanceGRPO FLUX script: 12 images per prompt, 3 optimiser steps per iteration.
    "dancegrpo": {"flat": {"group_size": 12}, "train": {"minibatches": 3}},
    # Flow-GRPO pickscore_sd3: 24 images per prompt, 2 optimiser steps per epoch, KL 0.01.
    "flowgrpo": {"flat": {"group_size": 24}, "train": {"minibatches": 2}},
    # MixGRPO FLUX script: 12 per prompt, window 4 sliding every 25 iterations, 4 optimiser
    # steps per iteration (gradient accumulation 3 over 12 images).
    "mixgrpo": {
        "flat": {"group_size": 12, "window": 4, "slide_every": 25},
        "train": {"minibatches": 4},
    },
}

_SD35: dict[str, Any] = {
    "model": "./models/stable-diffusion-3.5-medium",
    "reward": "hps",
    "reward_options": {"hps": {"path": "./models/hps-v2.1-clip"}},
    "prompts": "general",
    "eval_prompts": "general-heldout",
    "prompts_per_epoch": 8,
    "epochs": 250,
    "device": "cuda",
    "dtype": "bfloat16",
    "checkpoint_every": 10,
    "log_tree_every": 10,
    "sample_every": 10,
    "sampling": {"steps": 10, "cfg_scale": 4.5, "height": 512, "width": 512},
    # Paper: k = d = 3, random window r = 0.5, probability-weighted backup (Alg. 1, Eq. 10-11).
    "tree": {
        "k": 3,
        "depth": 3,
        "window": "random",
        "window_ratio": 0.5,
        "backup": "logprob_softmax",
    },
    "flat": {"group_size": 27},
    "train": {
        "full_lr": 1e-5,
        "weight_decay": 0.01,  # paper: AdamW, lr 1e-5, weight decay 0.01, 250 epochs
        "clip_range": 1e-4,
        "adv_clip": 5.0,
        "max_grad_norm": 1.0,
        "loss_agg": "sum",
        "micro_batch": 8,
        "grad_checkpointing": True,
    },
}
_SD35_MULTI: dict[str, Any] = {
    "reward": {"hps": 0.8, "clipscore": 0.2},
    "reward_options": {
        "hps": {"path": "./models/hps-v2.1-clip"},
        "clipscore": {"path": "./models/clip-vit-large-patch14"},
    },
}

# DanceGRPO scripts/finetune/finetune_flux_grpo.sh and fastvideo/train_grpo_flux.py
# (docs/FIDELITY.md, "FLUX presets"): what is the model's setting rather than the method's.
_FLUX: dict[str, Any] = {
    "model": "black-forest-labs/FLUX.1-dev",
    "reward": "hps",  # --use_hpsv2
    "reward_options": {"hps": {"path": "./models/hps-v2.1-clip"}},
    "prompts": "general",
    "eval_prompts": "general-heldout",
    "prompts_per_epoch": 16,  # torchrun 2 nodes x 8 GPUs x --train_batch_size 1
    "epochs": 300,  # --max_train_steps 300
    "device": "cuda",
    "dtype": "bfloat16",  # --mixed_precision bf16
    "checkpoint_every": 40,  # --checkpointing_steps 40
    "log_tree_every": 10,
    "sample_every": 10,
    # --h 720 --w 720 --sampling_steps 16 --cfg 0.0; guidance=torch.tensor([3.5]) in the loop
    "sampling": {"steps": 16, "cfg_scale": 1.0, "guidance": 3.5, "height": 720, "width": 720},
    "tree": {"k": 3, "depth": 3, "window": "random", "window_ratio": 0.5},
    "train": {
        "full_lr": 1e-5,  # --learning_rate 1e-5
        "weight_decay": 1e-4,  # --weight_decay 0.0001
        "clip_range": 1e-4,  # --clip_range 1e-4
        "adv_clip": 5.0,  # --adv_clip_max 5.0
        "max_grad_norm": 1.0,  # --max_grad_norm 1.0
        "micro_batch": 4,
        "grad_checkpointing": True,  # --gradient_checkpointing
    },
}
# MixGRPO scripts/finetune/finetune_flux_grpo_MixGRPO.sh: its own steps and prompts per step.
_FLUX_MIXGRPO: dict[str, Any] = {
    "prompts_per_epoch": 32,  # 4 nodes x 8 GPUs x --train_batch_size 1
    "checkpoint_every": 50,  # --checkpointing_steps 50
    "sampling": {"steps": 25},  # sampling_steps=25
}

_SD15: dict[str, Any] = {
    "model": "./models/stable-diffusion-v1-5",
    "reward": "pickscore",
    "reward_options": {"pickscore": {"path": "./models/pickscore-clip"}},
    "prompts": "general",
    "eval_prompts": "general-heldout",
    "prompts_per_epoch": 8,
    "epochs": 200,
    "device": "cuda",
    "dtype": "bfloat16",
    "checkpoint_every": 10,
    "log_tree_every": 10,
    "sample_every": 10,
    "sampling": {"steps": 10, "cfg_scale": 7.5},
    "tree": {"k": 3, "depth": 3, "window": "random", "window_ratio": 0.5},
    "flat": {"group_size": 27},
    "train": {"lora_lr": 3e-4, "clip_range": 1e-4, "lora_rank": 16, "micro_batch": 16},
}


def _family(base: dict[str, Any], algorithm: str, recipe: bool = True) -> dict[str, Any]:
    merged = deep_merge(base, {"algorithm": algorithm})
    return deep_merge(merged, _RECIPES[algorithm]) if recipe else merged


PRESETS: dict[str, dict[str, Any]] = {}
for _algorithm in ALGORITHMS:
    # The tiny presets are smoke tests: one shape for all, so tests can count images.
    PRESETS[f"tiny-{_algorithm}"] = _family(_TINY, _algorithm, recipe=False)
    PRESETS[f"digits-{_algorithm}"] = _family(_DIGITS, _algorithm)
    if _algorithm != "treegrpo":
        # Matched budget: as many images per iteration as the tree (G = k^d).
        PRESETS[f"digits-{_algorithm}-matched"] = deep_merge(
            _family(_DIGITS, _algorithm), {"flat": {"group_size": 27}}
        )
        PRESETS[f"tiny-{_algorithm}-matched"] = PRESETS[f"tiny-{_algorithm}"]
PRESETS["flux-treegrpo"] = _family(_FLUX, "treegrpo")
PRESETS["flux-dancegrpo"] = _family(_FLUX, "dancegrpo")
PRESETS["flux-mixgrpo"] = deep_merge(_family(_FLUX, "mixgrpo"), _FLUX_MIXGRPO)
PRESETS["sd35-treegrpo"] = _family(_SD35, "treegrpo")
PRESETS["sd35-treegrpo-multi"] = deep_merge(PRESETS["sd35-treegrpo"], _SD35_MULTI)
PRESETS["sd35-dancegrpo"] = _family(_SD35, "dancegrpo")
# Flow-GRPO's SD3.5 recipe trains PickScore (config/grpo.py `pickscore_sd3`).
PRESETS["sd35-flowgrpo"] = {
    **_family(_SD35, "flowgrpo"),
    "reward": "pickscore",
    "reward_options": {"pickscore": {"path": "./models/pickscore-clip"}},
}
PRESETS["sd15-treegrpo"] = _family(_SD15, "treegrpo")

# -- evaluation presets ------------------------------------------------------------------------

# Flow-GRPO's evaluation (config/grpo.py; scripts/train_sd3.py `eval`): 40 steps (training 10),
# CFG 4.5, 512 x 512, the whole test split, one image per prompt, fixed noise.
_FLOWGRPO_EVAL: dict[str, Any] = {"eval": {"steps": 40, "images_per_prompt": 1}}

EVAL_PRESETS: dict[str, dict[str, Any]] = {
    "eval-digits": deep_merge(
        PRESETS["digits-treegrpo"],
        {
            "eval_prompts": "digits-heldout",
            "eval": {
                "rewards": {"digit_judge": 1.0, "boldness": 1.0, "contrast": 1.0},
                "images_per_prompt": 4,
            },
        },
    ),
    # The paper's Table 1: four rewards on the 3,200 held-out HPDv2 prompts (HPS benchmark).
    "eval-treegrpo-table1": deep_merge(
        PRESETS["sd35-treegrpo"],
        {
            **_FLOWGRPO_EVAL,
            "eval_prompts": {"dataset": "hpdv2", "split": "test"},
            "eval": {
                **_FLOWGRPO_EVAL["eval"],
                "rewards": {"hps": 1.0, "imagereward": 1.0, "aesthetic": 1.0, "clipscore": 1.0},
            },
            "reward_options": {
                "hps": {"path": "./models/hps-v2.1-clip"},
                "imagereward": {
                    "path": "./models/ImageReward",
                    "tokenizer_path": "./models/bert-base-uncased",
                },
                "aesthetic": {
                    "path": "./models/clip-vit-large-patch14",
                    "head": "./models/aesthetic/sac+logos+ava1-l14-linearMSE.pth",
                },
                "clipscore": {"path": "./models/clip-vit-large-patch14"},
            },
        },
    ),
    # Flow-GRPO dataset/ocr/test.txt: 1,018 prompts with one quoted text each.
    "eval-flowgrpo-ocr": deep_merge(
        PRESETS["sd35-flowgrpo"],
        {
            "eval_prompts": {"dataset": "flowgrpo-ocr", "split": "test"},
            "eval": {**_FLOWGRPO_EVAL["eval"], "rewards": "ocr"},
        },
    ),
    # Flow-GRPO dataset/geneval/test_metadata.jsonl: 2,212 prompts with GenEval metadata.
    "eval-flowgrpo-geneval": deep_merge(
        PRESETS["sd35-flowgrpo"],
        {
            "eval_prompts": {"dataset": "flowgrpo-geneval", "split": "test"},
            "eval": {**_FLOWGRPO_EVAL["eval"], "rewards": "geneval"},
            # GenEval's strict rules for evaluation (exact counts), as Flow-GRPO's eval reports.
            "reward_options": {
                "geneval": {
                    "path": "./models/mask2former-swin-small-coco-instance",
                    "clip_path": "./models/clip-vit-large-patch14",
                    "mode": "strict",
                }
            },
        },
    ),
    # Flow-GRPO dataset/pickscore/test.txt: 2,048 Pick-a-Pic prompts.
    "eval-flowgrpo-pickscore": deep_merge(
        PRESETS["sd35-flowgrpo"],
        {
            "eval_prompts": {"dataset": "flowgrpo-pickscore", "split": "test"},
            "eval": {**_FLOWGRPO_EVAL["eval"], "rewards": "pickscore"},
        },
    ),
}

# Evaluation presets this build cannot express yet (a dataset id as eval_prompts, a reward that
# is not registered), by name, with the validation's reason; they join PRESETS once they validate.
PENDING_PRESETS: dict[str, str] = {}
for _name, _overrides in EVAL_PRESETS.items():
    try:
        RunConfig.from_dict(_overrides)
    except ConfigError as _exc:
        PENDING_PRESETS[_name] = str(_exc)
    else:
        PRESETS[_name] = _overrides


def preset_dict(name: str) -> dict[str, Any]:
    """A deep copy of a preset's overrides; unknown names raise ConfigError."""
    if name in PENDING_PRESETS:
        raise ConfigError(
            "preset",
            f"preset {name!r} needs what this build cannot express yet: {PENDING_PRESETS[name]}",
        )
    if name not in PRESETS:
        raise ConfigError("preset", f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])
