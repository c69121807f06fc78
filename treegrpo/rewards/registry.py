"""Reward registry: `name -> factory(device, options) -> fn(images, prompts, metadata) -> scores`.

Images are (B, C, H, W) float32 in [0, 1]; scores are a float32 CPU tensor (B,). Higher is better.
`metadata` holds one mapping per image: the row metadata of the image's prompt in its dataset
(treegrpo/datasets/; every column but the prompt, e.g. GenEval's `tag`/`include`/`exclude` or
the digits dataset's `digit`), `{}` for a prompt without any (inline lists, named sets). A
reward that ignores it still takes it: every reward is called with all three arguments.

Required metadata: a reward that reads keys from `metadata` declares them in
`names.REQUIRED_METADATA` (torch-free, so the API can read it), e.g.

    REQUIRED_METADATA = {"geneval": ("tag", "include")}

A run whose prompts lack one is then refused at submit with a 422 naming the key (the dataset's
columns are checked with `missing_metadata`), never mid-run; a reward still meets `{}` rows when
called directly, and should raise a clear error naming the key then.
Callers score through `score_images`, which checks every reward's answer (one finite number per
image) before anything is computed from it: a NaN would otherwise turn a whole group's advantages
into NaN and the update would silently poison the weights.
`options` are the run's `reward_options[name]` (a local model folder, a server URL, ...); a factory
raises ConfigError naming `reward_options.<name>.<key>` for a bad or missing one.

Any reward of a weighted set may be scored on the server that hosts it: with
`reward_options.<name>.server: URL` (a `treegrpo reward-serve --reward <name>`), it is built as a
`remote` client of that server instead of loading the model here, and the run's per-reward
z-score sum is unchanged. Secret references (`api_key_env`, `api_key_secret`) are resolved by the
caller's resolver (treegrpo/secrets.py) just before the factories run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from treegrpo.config import ConfigError, RunConfig
from treegrpo.rewards import clip, digits, geneval, imagereward, jpeg, ocr, remote, vlm_judge
from treegrpo.rewards.names import (
    REQUIRED_METADATA,
    REWARD_NAMES,
    missing_metadata,
    required_metadata,
)
from treegrpo.rewards.pixels import brightness, contrast
from treegrpo.rewards.signature import Metadata, RewardFactory, RewardFn
from treegrpo.secrets import Resolver, resolve_options

REWARDS: dict[str, RewardFactory] = {
    "brightness": lambda device, options: brightness,
    "contrast": lambda device, options: contrast,
    "digit_judge": lambda device, options: digits.digit_judge,
    "boldness": lambda device, options: digits.boldness,
    "jpeg_compressibility": jpeg.jpeg_compressibility_factory,
    "jpeg_incompressibility": jpeg.jpeg_incompressibility_factory,
    "clipscore": clip.clipscore_factory,
    "pickscore": clip.pickscore_factory,
    "aesthetic": clip.aesthetic_factory,
    "hps": clip.hps_factory,
    "remote": remote.remote_factory,
    "ocr": ocr.ocr_factory,
    "vlm_judge": vlm_judge.vlm_judge_factory,
    "imagereward": imagereward.imagereward_factory,
    "geneval": geneval.geneval_factory,
}

# Re-exported: callers import them here.
__all__ = [
    "REQUIRED_METADATA",
    "Metadata",
    "RewardFactory",
    "RewardFn",
    "missing_metadata",
    "required_metadata",
]

assert set(REWARDS) == set(REWARD_NAMES), "rewards/names.py must list exactly the registry"


def empty_metadata(count: int) -> list[dict[str, Any]]:
    """One empty mapping per image: the metadata of prompts that have none."""
    return [{} for _ in range(count)]


class RewardError(RuntimeError):
    """A reward failed or answered something other than one finite score per image."""


def score_images(
    rewards: Mapping[str, RewardFn],
    images: Tensor,
    prompts: Sequence[str],
    metadata: Metadata | None = None,
) -> dict[str, Tensor]:
    """Every reward's scores of `images` (B, C, H, W): name -> float32 CPU (B,); `metadata` is
    one mapping per image (None: `{}` each).

    Raises RewardError naming the reward when it raises, answers the wrong shape, or answers a
    NaN or infinite score (with the first offending prompt), so no such value reaches an advantage.
    """
    count = len(prompts)
    if metadata is None:
        metadata = empty_metadata(count)
    elif len(metadata) != count:
        raise ValueError(f"{len(metadata)} metadata rows for {count} prompts")
    out: dict[str, Tensor] = {}
    for name, fn in rewards.items():
        try:
            values = fn(images, prompts, metadata)
        except Exception as exc:
            raise RewardError(
                f"reward {name!r} failed on {count} images: {type(exc).__name__}: {exc}"
            ) from exc
        values = torch.as_tensor(values).detach().float().cpu()
        if values.shape != (count,):
            raise RewardError(
                f"reward {name!r} returned scores of shape {tuple(values.shape)} for {count} "
                f"images; expected ({count},)"
            )
        bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
        if bad:
            first = bad[0]
            raise RewardError(
                f"reward {name!r} returned {len(bad)} non-finite score(s) for {count} images "
                f"(first: {float(values[first])} for prompt {prompts[first]!r}); a NaN or infinite "
                "reward would corrupt every advantage of its prompt group, so scoring stops here"
            )
        out[name] = values
    return out


def _build(name: str, device: torch.device, options: Mapping[str, Any]) -> RewardFn:
    """The reward `name`: here, or a `remote` client of the server its `server` option names."""
    if name == "remote" or "server" not in options:
        return REWARDS[name](device, options)
    client = {"url": options["server"]}
    for key, value in options.items():
        if key == "server":
            continue
        if key not in remote.OPTIONS or key == "url":
            raise ConfigError(
                f"reward_options.{name}.{key}",
                "with `server`, the reward's own options belong to its server "
                f"(`treegrpo reward-serve --reward {name} --option {key}=...`); here only the "
                f"client's: {', '.join(o for o in remote.OPTIONS if o != 'url')}",
            )
        client[key] = value
    try:
        return remote.remote_factory(device, client)
    except ConfigError as exc:
        field = exc.field.replace("reward_options.remote.url", f"reward_options.{name}.server")
        raise ConfigError(field.replace(".remote.", f".{name}."), exc.reason) from None


def load_rewards(
    weights: Mapping[str, float],
    device: torch.device | str = "cpu",
    options: Mapping[str, Mapping[str, Any]] | None = None,
    resolve: Resolver | None = None,
) -> dict[str, RewardFn]:
    """One scoring function per named reward of a config; `resolve` reads secret references."""
    unknown = [name for name in weights if name not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward(s) {unknown}; known: {sorted(REWARDS)}")
    resolved = resolve_options(options or {}, resolve)
    return {name: _build(name, torch.device(device), resolved.get(name, {})) for name in weights}


def load_run_rewards(
    config: RunConfig, device: torch.device | str = "cpu", resolve: Resolver | None = None
) -> dict[str, RewardFn]:
    """The scoring functions a run config names, with its reward_options."""
    return load_rewards(config.reward_weights, device, config.reward_options, resolve)
