"""Reward registry: `name -> factory(device, options) -> fn(images, prompts) -> scores`.

Images are (B, C, H, W) float32 in [0, 1]; scores are a float32 CPU tensor (B,). Higher is better.
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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from treegrpo.config import ConfigError, RunConfig
from treegrpo.rewards import clip, digits, geneval, imagereward, jpeg, ocr, remote, vlm_judge
from treegrpo.rewards.names import REWARD_NAMES
from treegrpo.rewards.pixels import brightness, contrast
from treegrpo.secrets import Resolver, resolve_options

RewardFn = Callable[[Tensor, Sequence[str]], Tensor]
RewardFactory = Callable[[torch.device, Mapping[str, Any]], RewardFn]
# The benchmark tasks' rewards take each image's metadata too (one dict per image).
MetadataRewardFn = Callable[[Tensor, Sequence[str], Sequence[Mapping[str, Any]]], Tensor]
MetadataRewardFactory = Callable[[torch.device, Mapping[str, Any]], MetadataRewardFn]


def without_metadata(factory: MetadataRewardFactory) -> RewardFactory:
    """A metadata-taking reward in today's two-argument registry: every image gets {}.

    (Until prompts carry metadata, issue 25: then the registry passes each row's own.)"""

    def build(device: torch.device, options: Mapping[str, Any]) -> RewardFn:
        fn = factory(device, options)

        def score(images: Tensor, prompts: Sequence[str]) -> Tensor:
            return fn(images, prompts, [{} for _ in prompts])

        score.__name__ = getattr(fn, "__name__", "score")
        if getattr(fn, "remote", False):
            score.remote = True  # type: ignore[attr-defined]  # the trainer overlaps its scoring
        return score

    return build


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
    "ocr": without_metadata(ocr.ocr_factory),
    "vlm_judge": without_metadata(vlm_judge.vlm_judge_factory),
    "imagereward": without_metadata(imagereward.imagereward_factory),
    "geneval": without_metadata(geneval.geneval_factory),
}

assert set(REWARDS) == set(REWARD_NAMES), "rewards/names.py must list exactly the registry"


class RewardError(RuntimeError):
    """A reward failed or answered something other than one finite score per image."""


def score_images(
    rewards: Mapping[str, RewardFn], images: Tensor, prompts: Sequence[str]
) -> dict[str, Tensor]:
    """Every reward's scores of `images` (B, C, H, W): name -> float32 CPU (B,).

    Raises RewardError naming the reward when it raises, answers the wrong shape, or answers a
    NaN or infinite score (with the first offending prompt), so no such value reaches an advantage.
    """
    count = len(prompts)
    out: dict[str, Tensor] = {}
    for name, fn in rewards.items():
        try:
            values = fn(images, prompts)
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
