"""Named starting points for runs. Torch-free: a preset is a dict of config overrides.

- `tiny-*`: seconds on the random-init test model with the brightness reward (tests, smoke runs).
- `digits-*`: the shipped digits model with the digit-judge reward; a CPU shows TreeGRPO's gain
  in minutes. Galleries use held-out prompt phrasings.
- `sd35-treegrpo`: the paper's SD3.5-Medium settings (T=10, k=3, d=3, random window r=0.5,
  lr 1e-5, clip 1e-4, eta 0.7, CFG 4.5, advantage clip 5, reward 0.8 HPS + 0.2 CLIPScore).
- `sd15-treegrpo`: SD1.5 with DDIM (eta 1), LoRA rank 16, as DDPO-style SD1.5 runs do.
The SD presets name local folders under ./models; point `model` and `reward_options.*.path` at
your own with `--set`.

Each baseline preset matches its TreeGRPO sibling on prompts, reward, lr, steps and images per
prompt per epoch (flat.group_size = k^d), so comparisons between them are fair.
"""

from __future__ import annotations

from typing import Any

from treegrpo.config import ConfigError, deep_merge

_ALGORITHMS = ("treegrpo", "dancegrpo", "flowgrpo", "mixgrpo")

_TINY: dict[str, Any] = {
    "model": "tiny-random",
    "reward": "brightness",
    "prompts": "tiny",
    "prompts_per_epoch": 2,
    "epochs": 2,
    "sampling": {"steps": 6, "cfg_scale": 2.0, "eta": 0.7},
    "tree": {"k": 2, "depth": 2, "window": "random"},
    "flat": {"group_size": 4, "window": 2},
    "train": {"lr": 1e-3, "clip_range": 0.2, "minibatches": 2},
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
    "sampling": {"steps": 10, "cfg_scale": 1.5, "eta": 0.7},
    "tree": {"k": 3, "depth": 3, "window": "random", "window_ratio": 0.5},
    "flat": {"group_size": 27, "window": 3},
    "train": {"lr": 1e-4, "clip_range": 1e-3, "minibatches": 2},
}

_SD35: dict[str, Any] = {
    "model": "./models/stable-diffusion-3.5-medium",
    "reward": {"hps": 0.8, "clipscore": 0.2},
    "reward_options": {
        "hps": {"path": "./models/hps-v2-clip"},
        "clipscore": {"path": "./models/clip-vit-large-patch14"},
    },
    "prompts": "general",
    "prompts_per_epoch": 8,
    "epochs": 300,
    "device": "cuda",
    "dtype": "bfloat16",
    "checkpoint_every": 10,
    "log_tree_every": 10,
    "sample_every": 10,
    "sampling": {"steps": 10, "cfg_scale": 4.5, "eta": 0.7},
    "tree": {"k": 3, "depth": 3, "window": "random", "window_ratio": 0.5, "backup": "mean"},
    "flat": {"group_size": 27, "window": 3},
    "train": {
        "lr": 1e-5,
        "clip_range": 1e-4,
        "adv_clip": 5.0,
        "max_grad_norm": 1.0,
        "loss_agg": "sum",
        "micro_batch": 8,
        "grad_checkpointing": True,
    },
}

_SD15: dict[str, Any] = {
    "model": "./models/stable-diffusion-v1-5",
    "reward": "pickscore",
    "reward_options": {"pickscore": {"path": "./models/pickscore-clip"}},
    "prompts": "general",
    "prompts_per_epoch": 8,
    "epochs": 200,
    "device": "cuda",
    "dtype": "bfloat16",
    "checkpoint_every": 10,
    "log_tree_every": 10,
    "sample_every": 10,
    "sampling": {"steps": 10, "cfg_scale": 7.5, "eta": 1.0},
    "tree": {"k": 3, "depth": 3, "window": "random", "window_ratio": 0.5},
    "flat": {"group_size": 27, "window": 3},
    "train": {"lr": 3e-4, "clip_range": 1e-4, "lora_rank": 16, "micro_batch": 16},
}

PRESETS: dict[str, dict[str, Any]] = {
    f"{family}-{algorithm}": deep_merge(base, {"algorithm": algorithm})
    for family, base in (("tiny", _TINY), ("digits", _DIGITS))
    for algorithm in _ALGORITHMS
}
PRESETS["sd35-treegrpo"] = deep_merge(_SD35, {"algorithm": "treegrpo"})
PRESETS["sd35-dancegrpo"] = deep_merge(_SD35, {"algorithm": "dancegrpo"})
PRESETS["sd15-treegrpo"] = deep_merge(_SD15, {"algorithm": "treegrpo"})


def preset_dict(name: str) -> dict[str, Any]:
    """A deep copy of a preset's overrides; unknown names raise ConfigError."""
    import copy

    if name not in PRESETS:
        raise ConfigError("preset", f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return copy.deepcopy(PRESETS[name])
