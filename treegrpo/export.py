"""Trained weights out of the studio, in the layouts diffusers loads.

    export_checkpoint(Path("runs/demo"), "lora", Path("demo-lora"))      # a LoRA run
    pipe = StableDiffusion3Pipeline.from_pretrained(base); pipe.load_lora_weights("demo-lora")

    export_checkpoint(Path("runs/full"), "pipeline", Path("full-pipe"))  # any run of a folder model
    pipe = DiffusionPipeline.from_pretrained("full-pipe")

A checkpoint keeps the trainable tensors under the denoiser's own parameter names (peft's for
LoRA: `...to_q.lora_A.default.weight`, no alpha). The LoRA export is diffusers' format
(`LoraBaseMixin.write_lora_layers`): pytorch_lora_weights.safetensors whose keys carry the
pipeline component as a prefix (`transformer.` for SD3 and FLUX, `unet.` for SD1.5:
`ModelAdapter.export_prefix`) and no adapter name, and whose metadata holds the LoraConfig
(rank, alpha = rank, target modules) under "lora_adapter_metadata", so the loaded scale is the
trained one. A pipeline export is the base pipeline folder with the trained denoiser, written by
`save_pretrained` (a LoRA run is fused in first), so it loads strictly: frozen weights and
buffers the checkpoint does not hold (SD3's `pos_embed.pos_embed`) come from the base.

Each export carries a model card, README.md: base model, algorithm, reward, epochs, the held-out
reward of the last gallery before the checkpoint, and the run's config.

The trainer writes the LoRA export of every LoRA checkpoint into it (`lora/`, see
`write_lora_export`), so a worker's checkpoint already holds what the API's export route serves
and the API process never needs torch.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from treegrpo.checkpoint import PREFIX, checkpoint_weights, is_checkpoint, latest_checkpoint
from treegrpo.config import ConfigError

Format = Literal["lora", "pipeline"]
FORMATS: tuple[Format, ...] = ("lora", "pipeline")
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
LORA_METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY
LORA_EXPORT_DIR = "lora"  # inside a checkpoint folder
CARD_NAME = "README.md"
ADAPTER_NAME = "default"  # the peft adapter name `add_adapter` gives


class ExportError(ValueError):
    """The source cannot be exported as asked; the message says why and what would work."""


# -- finding the checkpoint -----------------------------------------------------------------------


def find_checkpoint(source: Path, epoch: int | None = None) -> Path:
    """The checkpoint folder `source` names: a checkpoint itself, or the newest (or epoch
    `epoch`'s) under a checkpoints folder, a run folder (`treegrpo train --out`) or a job's
    folder in the artifact store (jobs/ID)."""
    if not source.is_dir():
        raise ExportError(f"{source} is not a folder")
    if is_checkpoint(source):
        if epoch is not None and source.name != f"{PREFIX}{epoch:06d}":
            raise ExportError(f"{source} is a checkpoint of another epoch than {epoch}")
        return source
    root = source / "checkpoints" if (source / "checkpoints").is_dir() else source
    if epoch is not None:
        chosen = root / f"{PREFIX}{epoch:06d}"
        if not (chosen / "state.json").is_file():
            raise ExportError(f"{root} holds no checkpoint of epoch {epoch}")
        return chosen
    found = latest_checkpoint(root)
    if found is None:
        raise ExportError(
            f"{source} holds no checkpoint: expected a run folder (with checkpoints/), a "
            "checkpoints folder or one checkpoint (state.json + model.safetensors or dcp/)"
        )
    return found


def read_checkpoint_document(checkpoint: Path) -> dict[str, Any]:
    """state.json of a checkpoint: {"state": TrainState fields, "config": the run config}."""
    document: dict[str, Any] = json.loads((checkpoint / "state.json").read_text())
    return document


# -- the model card -------------------------------------------------------------------------------


def held_out_summary(state: Mapping[str, Any], reward_weights: Mapping[str, float]) -> str:
    """The last gallery's held-out rewards (ODE samples of the eval prompts), as a line."""
    values: Mapping[str, float] = state.get("held_out") or {}
    if not values:
        return "not measured (no gallery ran before this checkpoint; set sample_every)"
    parts = [f"{name} {value:.4f}" for name, value in sorted(values.items())]
    means = {
        name[len("eval/") : -len("_mean")]: value
        for name, value in values.items()
        if name.startswith("eval/") and name.endswith("_mean")
    }
    if set(reward_weights) <= set(means) and len(reward_weights) > 1:
        total = sum(weight * means[name] for name, weight in reward_weights.items())
        parts.insert(0, f"weighted {total:.4f}")
    return f"{', '.join(parts)} (gallery of epoch {state.get('held_out_epoch', '?')})"


def model_card(document: Mapping[str, Any], fmt: Format, prefix: str | None = None) -> str:
    """README.md of an export: what was trained from what, how well, and how to load it."""
    config: Mapping[str, Any] = document["config"]
    state: Mapping[str, Any] = document["state"]
    reward_setting = config.get("reward")
    weights: Mapping[str, float] = (
        dict(reward_setting) if isinstance(reward_setting, dict) else {str(reward_setting): 1.0}
    )
    reward = " + ".join(f"{w:g} x {name}" for name, w in weights.items())
    lora_rank = int(config.get("train", {}).get("lora_rank", 0))
    base = str(config["model"])
    if fmt == "lora":
        kind = f"LoRA adapters (rank {lora_rank}, alpha {lora_rank}) for the `{prefix}`"
        usage = (
            "```python\nfrom diffusers import DiffusionPipeline\n\n"
            f'pipe = DiffusionPipeline.from_pretrained("{base}")\n'
            'pipe.load_lora_weights("THIS_FOLDER")\n```'
        )
        if "/" not in base and not base.startswith("."):  # a built-in model, not a pipeline
            usage = (
                f"The base model `{base}` is the studio's own and has no diffusers pipeline; "
                f"the adapters fit its `{prefix}` (a diffusers model): "
                f'`{prefix}.load_lora_adapter(state_dict, prefix="{prefix}")`.'
            )
    else:
        how = "with the LoRA adapters fused in" if lora_rank else "fully fine-tuned"
        kind = f"a complete diffusers pipeline, {how}"
        usage = (
            "```python\nfrom diffusers import DiffusionPipeline\n\n"
            'pipe = DiffusionPipeline.from_pretrained("THIS_FOLDER")\n```'
        )
    return "\n".join(
        [
            "---",
            "library_name: diffusers",
            "tags: [treegrpo, reinforcement-learning, text-to-image]",
            "---",
            "",
            f"# {config.get('algorithm', '?')} fine-tune of {base}",
            "",
            f"Exported by the TreeGRPO studio (`treegrpo export --format {fmt}`): {kind}.",
            "",
            f"- Base model: `{base}`",
            f"- Algorithm: {config.get('algorithm', '?')}",
            f"- Reward: {reward}",
            f"- Epochs: {state.get('epoch', '?')} of {config.get('epochs', '?')}",
            f"- Final held-out reward: {held_out_summary(state, weights)}",
            f"- Seed: {config.get('seed', '?')}",
            "",
            "## Use",
            "",
            usage,
            "",
            "## Config",
            "",
            "```json",
            json.dumps(config, indent=1, sort_keys=True),
            "```",
            "",
        ]
    )


# -- LoRA ----------------------------------------------------------------------------------------


def diffusers_lora_state(
    weights: Mapping[str, torch.Tensor], prefix: str
) -> dict[str, torch.Tensor]:
    """peft names of the denoiser (`blocks.0.attn.to_q.lora_A.default.weight`) -> diffusers'
    (`transformer.blocks.0.attn.to_q.lora_A.weight`)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        for side in ("lora_A", "lora_B"):
            marker = f".{side}.{ADAPTER_NAME}."
            if marker in name:
                out[f"{prefix}.{name.replace(marker, f'.{side}.')}"] = tensor.contiguous()
                break
        else:
            raise ExportError(
                f"tensor {name!r} is not a LoRA adapter weight: a full fine-tune exports as "
                "--format pipeline"
            )
    return out


def lora_config_metadata(
    state: Mapping[str, torch.Tensor], prefix: str, rank: int
) -> dict[str, Any]:
    """The LoraConfig diffusers builds the adapter from (`_create_lora_config`), keyed with the
    component prefix as `_pack_dict_with_prefix` writes it: `transformer.r`, ..."""
    modules = sorted({name[len(prefix) + 1 :].split(".lora_")[0] for name in state})
    config = {"r": rank, "lora_alpha": rank, "lora_dropout": 0.0, "target_modules": modules}
    return {f"{prefix}.{key}": value for key, value in config.items()}


def write_lora_export(checkpoint: Path, out: Path, prefix: str) -> Path:
    """The diffusers LoRA of a LoRA checkpoint (possibly a temporary folder that is about to
    become one): `out`/pytorch_lora_weights.safetensors and `out`/README.md."""
    document = read_checkpoint_document(checkpoint)
    rank = int(document["config"].get("train", {}).get("lora_rank", 0))
    if not rank:
        raise ExportError(
            f"{checkpoint} is a full fine-tune (train.lora_rank = 0): export it with "
            "--format pipeline"
        )
    state = diffusers_lora_state(checkpoint_weights(checkpoint), prefix)
    metadata = {
        "format": "pt",
        LORA_METADATA_KEY: json.dumps(
            lora_config_metadata(state, prefix, rank), indent=2, sort_keys=True
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / LORA_WEIGHT_NAME), metadata=metadata)
    (out / CARD_NAME).write_text(model_card(document, "lora", prefix))
    return out


def lora_prefix_of(checkpoint: Path) -> str:
    """The component prefix of a LoRA checkpoint: from its own export when it has one, else
    from the adapter of its model (which loads the model)."""
    written = checkpoint / LORA_EXPORT_DIR / LORA_WEIGHT_NAME
    if written.is_file():
        with safe_open(str(written), framework="pt") as handle:
            return str(next(iter(handle.keys())).split(".", 1)[0])
    from treegrpo.config import RunConfig
    from treegrpo.models.registry import load_model

    config = RunConfig.from_dict(read_checkpoint_document(checkpoint)["config"])
    prefix = load_model(config.model, "cpu", "float32").export_prefix
    if prefix is None:
        raise ExportError(f"model {config.model!r} has no diffusers export")
    return prefix


# -- pipeline ------------------------------------------------------------------------------------


def base_pipeline_folder(model: str) -> Path:
    """The local diffusers folder a run's `model` names (pipeline exports start from it)."""
    from treegrpo.hub import local_folder

    builtin = "/" not in model and not model.startswith((".", "~"))
    try:  # a local folder, or a hub id in the local Hugging Face cache
        folder = Path(model) if builtin else local_folder("model", model, "a pipeline folder")
    except ConfigError as error:
        raise ExportError(str(error)) from error
    if not (folder / "model_index.json").is_file():
        raise ExportError(
            f"model {model!r} is not a diffusers pipeline folder, so there is no pipeline to "
            "export into; its LoRA runs export with --format lora"
        )
    return folder


def write_pipeline_export(checkpoint: Path, out: Path) -> Path:
    """The base pipeline with the checkpoint's denoiser, saved with `save_pretrained`.

    The denoiser is the pipeline component whose parameters the checkpoint's tensors name; a
    LoRA checkpoint is loaded through its diffusers export and fused.
    """
    from diffusers import DiffusionPipeline

    document = read_checkpoint_document(checkpoint)
    config = document["config"]
    folder = base_pipeline_folder(str(config["model"]))
    pipe = DiffusionPipeline.from_pretrained(
        str(folder), dtype=torch.float32, local_files_only=True
    )
    rank = int(config.get("train", {}).get("lora_rank", 0))
    if rank:
        lora = checkpoint / LORA_EXPORT_DIR
        if not (lora / LORA_WEIGHT_NAME).is_file():
            lora = write_lora_export(checkpoint, out / ".lora", lora_prefix_of(checkpoint))
        pipe.load_lora_weights(str(lora))
        pipe.fuse_lora(lora_scale=1.0)
        pipe.unload_lora_weights()
        shutil.rmtree(out / ".lora", ignore_errors=True)
    else:
        weights = checkpoint_weights(checkpoint)
        denoiser = denoiser_component(pipe, weights.keys())
        # Not strict: frozen weights and buffers the checkpoint leaves out keep the base's.
        missing = set(weights) - set(dict(denoiser.named_parameters()))
        assert not missing, missing
        denoiser.load_state_dict(weights, strict=False)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out))
    (out / CARD_NAME).write_text(model_card(document, "pipeline"))
    return out


def denoiser_component(pipe: Any, names: Any) -> torch.nn.Module:
    """The pipeline's module whose parameter names include every name of a checkpoint."""
    wanted = set(names)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module) and wanted <= {
            name for name, _ in component.named_parameters()
        }:
            return component
    raise ExportError("the checkpoint's tensors fit no component of the base pipeline")


# -- the entry point -----------------------------------------------------------------------------


def export_checkpoint(source: Path, fmt: Format, out: Path, epoch: int | None = None) -> Path:
    """Export the checkpoint `source` names (see `find_checkpoint`) as `fmt` into `out`."""
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} already holds files; pick an empty or new folder")
    checkpoint = find_checkpoint(source, epoch)
    if fmt == "lora":
        return write_lora_export(checkpoint, out, lora_prefix_of(checkpoint))
    return write_pipeline_export(checkpoint, out)
