"""The `treegrpo` command. The core owns `train` and `sample-tree`; backend, workers and frontend
add their subcommands through the `treegrpo.commands` entry-point group, found at run time, so
the core never imports them. An entry point names a function `register(subparsers) -> None`.

    treegrpo train --preset tiny-treegrpo --out runs/demo
    treegrpo train --resume runs/demo --set epochs=20
    treegrpo train --preset tiny-treegrpo --set gpus=2 --set device=cpu --out runs/two  # 2 ranks
    treegrpo sample-tree --model tiny-random --prompt "a bright square" --reward brightness \
        --k 3 --depth 3 --steps 10 --window-start 0 --seed 0 --backup mean --out tree_out
    treegrpo export runs/demo --format lora --out demo-lora     # or a job id: treegrpo export 12
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from treegrpo.config import ConfigError, RunConfig, deep_merge, expand_dotted, resolve_config

if TYPE_CHECKING:
    import torch

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
}


class CommandError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


# ---------------------------------------------------------------------------------------------
# train


def _load_config_file(path: Path) -> dict[str, Any]:
    import yaml

    from treegrpo.config import load_yaml

    try:
        data = load_yaml(path.read_text())
    except OSError as exc:
        raise CommandError(f"cannot read config file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise CommandError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CommandError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    preset = data.pop("preset", None)
    if preset is not None:
        from treegrpo.presets import preset_dict

        return deep_merge(preset_dict(str(preset)), expand_dotted(data))
    return data


class _InterruptStop:
    """Ctrl-C asks the trainer to stop after the current step and checkpoint; twice aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: list[Any] = []

    def __enter__(self) -> _InterruptStop:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous.append((signum, signal.signal(signum, self._handle)))
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous:
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstop requested: finishing the current step and checkpointing", file=sys.stderr)


def _train_argv(args: argparse.Namespace) -> list[str]:
    """The `treegrpo train ...` arguments of this command, for the launcher to repeat."""
    argv = ["train"]
    for flag, value in (
        ("--config", args.config),
        ("--preset", args.preset),
        ("--out", args.out),
        ("--resume", args.resume),
        ("--datasets", getattr(args, "datasets", None)),
    ):
        if value:
            argv += [flag, value]
    for assignment in args.set:
        argv += ["--set", assignment]
    return [*argv, "--quiet"] if args.quiet else argv


def _relaunch(command: list[str]) -> int:
    """Run the launcher as a child and return its exit status.

    Ctrl-C reaches the launcher directly (same process group) and it passes the signal to the
    ranks once, so this process ignores it; a SIGTERM sent here (e.g. by a supervisor) is passed
    on. Either way the ranks stop cleanly with a checkpoint.
    """
    child = subprocess.Popen(command)

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
    }
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def cmd_train(args: argparse.Namespace) -> int:
    from treegrpo.checkpoint import latest_checkpoint
    from treegrpo.distributed import (
        barrier,
        destroy_process_group,
        init_process_group,
        launch_command,
        rank_device,
        ranks_from_env,
        under_launcher,
    )
    from treegrpo.models.registry import resolve_device

    if args.resume:
        out = Path(args.resume)
        config_path = out / "config.json"
        if not config_path.exists():
            raise CommandError(f"{out} holds no run to resume (no config.json)")
        data = json.loads(config_path.read_text())
        changes = [a.partition("=")[0].strip() for a in args.set]
        if any(name not in ("epochs", "gpus", "nodes") for name in changes):
            raise CommandError(
                "only epochs, gpus and nodes can change on --resume (e.g. --set epochs=20)"
            )
        config = resolve_config(overrides=data, assignments=args.set)
        checkpoint = latest_checkpoint(out / "checkpoints")
        if checkpoint is None:
            raise CommandError(f"{out} has no checkpoint yet; start it again without --resume")
    else:
        if not args.out:
            raise CommandError("--out DIR is required (or --resume DIR)")
        if args.config and args.preset:
            raise CommandError("give --config or --preset, not both")
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise CommandError(
                f"{out} already holds files; continue it with --resume {out} or pick another --out"
            )
        base = _load_config_file(Path(args.config)) if args.config else None
        config = resolve_config(preset=args.preset, overrides=base, assignments=args.set)
        checkpoint = None

    # gpus > 1: the same command on `gpus` ranks. Started by hand, it starts the launcher; under
    # the launcher every rank gets here, joins the process group and trains its share.
    ranks = ranks_from_env(os.environ)
    if config.nodes > 1 and not under_launcher(os.environ):
        raise CommandError(
            f"nodes = {config.nodes}: run this command on every machine under torchrun (one "
            "agent per machine, c10d rendezvous), or submit the job to the studio, whose "
            "workers form the gang (README: Scaling out)"
        )
    if config.gpus > 1 and not under_launcher(os.environ):
        device = resolve_device(config.device)
        return _relaunch(launch_command(_train_argv(args), config.gpus, device.type == "cpu"))
    if ranks.world != config.world_size:
        raise CommandError(
            f"the launcher started {ranks.world} processes but the run asks for nodes x gpus = "
            f"{config.nodes} x {config.gpus}; launch as many as it asks for (or set gpus and "
            "nodes to match)"
        )
    device = rank_device(resolve_device(config.device), ranks)
    # Joining waits for every rank, so no rank writes below before all have checked the above.
    init_process_group(ranks, device)
    try:
        result = _train(args, config, out, checkpoint, device, ranks.is_main)
        # Every rank is done before the group goes away: gloo aborts a rank (SIGABRT, "terminate
        # called without an active exception") whose peer tears the group down under it.
        barrier()
        return result
    finally:
        destroy_process_group()


def _train(
    args: argparse.Namespace,
    config: RunConfig,
    out: Path,
    checkpoint: Path | None,
    device: torch.device,
    is_main: bool,
) -> int:
    """One rank's share of `treegrpo train`; only rank 0 (`is_main`) writes and prints."""
    from treegrpo.callbacks import (
        ArtifactWriter,
        Callback,
        JsonlMetrics,
        StopFile,
        truncate_metrics,
    )
    from treegrpo.distributed import barrier, current_ranks
    from treegrpo.models.registry import load_model_for
    from treegrpo.progress import ProgressBar
    from treegrpo.rewards.registry import load_run_rewards
    from treegrpo.secrets import environment_resolver
    from treegrpo.sharding import loads_empty_denoiser
    from treegrpo.trackers import make_trackers
    from treegrpo.trainer import Trainer

    metrics_path = out / "metrics.jsonl"

    class _Log(Callback):
        def on_log(self, message: str) -> None:
            with (out / "train.log").open("a") as handle:
                handle.write(message + "\n")

    interrupt = _InterruptStop()

    class _Interrupt(Callback):
        def should_stop(self) -> bool:
            return interrupt.requested

    # Only rank 0 of a sharded run reads the denoiser's weights; they reach the other ranks'
    # shards by broadcast (Trainer, sharding.fill_shards).
    empty = loads_empty_denoiser(config.train, current_ranks())
    adapter = load_model_for(config, str(device), empty_denoiser=empty)
    rewards = load_run_rewards(config, adapter.device, environment_resolver(os.environ))
    progress = ProgressBar(disable=args.quiet)
    trainer = Trainer(
        config,
        adapter,
        rewards,
        callbacks=[
            JsonlMetrics(metrics_path),
            ArtifactWriter(out / "artifacts"),
            StopFile(out / "STOP"),
            _Interrupt(),
            _Log(),
            progress,
            *make_trackers(config, out, out.name),
        ],
        checkpoint_root=out / "checkpoints",
        datasets=Path(args.datasets) if args.datasets else None,
    )
    # The folder is made only once the run is known to start, so a refused run leaves nothing.
    # The trainer calls the writing callbacks on rank 0 only; these writes are rank 0's too.
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
        (out / "STOP").unlink(missing_ok=True)
    barrier()  # no rank sees an old STOP file
    if checkpoint is not None:
        trainer.resume(checkpoint)
        if is_main:
            truncate_metrics(metrics_path, trainer.state.epoch)
    with interrupt:
        status = trainer.run()
    progress.close()
    if is_main:
        print(f"{status} at epoch {trainer.state.epoch}/{config.epochs}; run folder: {out}")
    return 0 if status == "completed" else 3


# ---------------------------------------------------------------------------------------------
# sample-tree


def cmd_sample_tree(args: argparse.Namespace) -> int:
    from treegrpo.artifacts import write_tree
    from treegrpo.models.registry import load_model_for
    from treegrpo.rewards.registry import load_run_rewards
    from treegrpo.sample_tree import grow_tree
    from treegrpo.secrets import environment_resolver

    settings: dict[str, Any] = {
        "model": args.model,
        "reward": args.reward,
        "seed": args.seed,
        "device": args.device,
        "tree.k": args.k,
        "tree.depth": args.depth,
        "tree.window": "fixed",
        "tree.window_start": args.window_start,
        "tree.backup": args.backup,
        "sampling.steps": args.steps,
    }
    if args.cfg_scale is not None:
        settings["sampling.cfg_scale"] = args.cfg_scale
    if args.eta is not None:
        settings["sampling.eta"] = args.eta
    config = RunConfig.from_dict(settings)
    adapter = load_model_for(config)
    record = grow_tree(
        adapter,
        args.prompt,
        config,
        load_run_rewards(config, adapter.device, environment_resolver(os.environ)),
        args.window_start,
    )
    out = Path(args.out)
    document = write_tree(record, out)
    leaves = [n for n in record.nodes if n.is_leaf]
    rewards = [n.reward for n in leaves if n.reward is not None]
    print(
        f"{len(document['nodes'])} nodes, {len(leaves)} leaves; reward "
        f"min {min(rewards):.4f} mean {sum(rewards) / len(rewards):.4f} max {max(rewards):.4f}; "
        f"wrote {out / 'tree.json'}"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# pretrain


def cmd_pretrain(args: argparse.Namespace) -> int:
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from treegrpo.artifacts import image_grid
    from treegrpo.models.digits import weights_path
    from treegrpo.pretrain import PretrainSettings, judge_agreement, pretrain_digits

    defaults = PretrainSettings()
    settings = PretrainSettings(
        steps=args.steps or defaults.steps, seed=args.seed, batch_size=args.batch_size
    )
    out = Path(args.out) if args.out else weights_path(args.variant)
    if args.threads:
        torch.set_num_threads(args.threads)
    bar = tqdm(total=settings.steps, desc=f"pretrain {args.variant}", unit="step")

    def on_step(step: int, loss: float, ema: torch.nn.Module) -> None:
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.4f}")

    adapter = pretrain_digits(args.variant, settings, on_step)
    bar.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    # float16 halves the shipped file; the model loads it back into float32.
    save_file(
        {
            k: v.detach().to(torch.float16).contiguous()
            for k, v in adapter.denoiser.state_dict().items()
        },
        str(out),
    )
    agreement, judged, images, _ = judge_agreement(adapter)
    grid = out.with_suffix(".png")
    image_grid(images[:40], columns=10).save(grid)
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); on 100 fixed prompts the digit judge "
        f"agrees with the prompt in {agreement:.0%} of samples (mean judge reward {judged:.3f}); "
        f"samples: {grid}"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# export

# Job ids: the studio (workers) registers `resolve(job_id, epoch) -> Path`, the job's checkpoints
# folder on this machine (downloaded first from a bucket store), so the core never imports it.
JOB_SOURCES = "treegrpo.job_sources"


def export_source(source: str, epoch: int | None = None) -> Path:
    """A run folder, checkpoints folder or checkpoint; or a studio job id (digits), whose
    checkpoints the studio finds (and downloads from a bucket store: `epoch`'s, or the latest)."""
    path = Path(source).expanduser()
    if path.exists() or not source.isdigit():
        if not path.is_dir():
            raise CommandError(f"{source} is neither a folder nor a job id")
        return path
    resolvers = list(entry_points(group=JOB_SOURCES))
    if not resolvers:
        raise CommandError(
            f"{source} looks like a job id, but the studio (workers) is not installed here; "
            "give a run folder instead"
        )
    try:
        found: Path = resolvers[0].load()(int(source), epoch)
    except LookupError as exc:
        raise CommandError(str(exc)) from exc
    return found


def cmd_export(args: argparse.Namespace) -> int:
    from treegrpo.export import ExportError, export_checkpoint, find_checkpoint

    source = export_source(args.source, args.epoch)
    try:
        checkpoint = find_checkpoint(source, args.epoch)
        out = export_checkpoint(checkpoint, args.format, Path(args.out))
    except ExportError as exc:
        raise CommandError(str(exc)) from exc
    what = "LoRA (diffusers format)" if args.format == "lora" else "pipeline folder"
    print(f"exported {checkpoint} as a {what} to {out}")
    return 0


def cmd_launcher(args: argparse.Namespace) -> int:
    """Print what a site's scheduler runs for a multi-node `treegrpo train` (treegrpo/launchers.py):
    the job's nodes and gpus come from its config, so nothing is typed twice."""
    import yaml

    from treegrpo.launchers import slurm_script, train_job

    base = _load_config_file(Path(args.config)) if args.config else None
    config = resolve_config(preset=args.preset, overrides=base, assignments=args.set)
    argv = ["train", *(["--config", args.config] if args.config else [])]
    argv += ["--preset", args.preset] if args.preset else []
    for assignment in args.set:
        argv += ["--set", assignment]
    argv += ["--out", args.out, "--quiet"]
    if args.site == "slurm":
        print(slurm_script(argv, config.nodes, config.gpus), end="")
    else:
        manifest = train_job(
            argv, nodes=config.nodes, gpus=config.gpus, name=args.name, image=args.image
        )
        print(yaml.safe_dump(manifest, sort_keys=False), end="")
    return 0


# ---------------------------------------------------------------------------------------------
# the command


def build_parser() -> argparse.ArgumentParser:
    from treegrpo.config import field_help

    parser = argparse.ArgumentParser(
        prog="treegrpo",
        description="TreeGRPO studio: tree-advantage GRPO for diffusion and flow models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    settings = "\n".join(f"  {name:28s} {text}" for name, text in field_help().items())
    train = sub.add_parser(
        "train",
        help="train a model with TreeGRPO or a baseline",
        description="Train with TreeGRPO or a baseline. Writes metrics.jsonl, checkpoints/, "
        "artifacts/ (trees, galleries) and train.log to --out. Ctrl-C or `touch OUT/STOP` "
        "stops cleanly with a checkpoint.",
        epilog="settings for --set (docs/TREEGRPO.md §9):\n" + settings,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("--config", help="YAML file of settings (may name a `preset:`)")
    train.add_argument("--preset", help="start from a named preset, e.g. tiny-treegrpo")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting"
    )
    train.add_argument("--out", help="run folder to create")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument(
        "--datasets",
        metavar="DIR",
        help="folder of stored dataset versions (<sha256>/, e.g. data/artifacts/datasets) that "
        "prompts: {dataset: ..., sha256: ...} is read from; without it, `dataset` may name a "
        "version folder itself",
    )
    train.set_defaults(func=cmd_train)

    tree = sub.add_parser(
        "sample-tree",
        help="grow one tree for a prompt, score it, write tree.json",
        description="Grow one TreeGRPO tree, score its leaves and back the advantages up. "
        "Writes OUT/tree.json and OUT/images/ (each state's predicted clean image).",
    )
    tree.add_argument("--model", default="tiny-random")
    tree.add_argument("--prompt", required=True)
    tree.add_argument("--k", type=int, default=3, help="branching factor")
    tree.add_argument("--depth", type=int, default=3, help="SDE window width d")
    tree.add_argument("--steps", type=int, default=10, help="denoising steps T")
    tree.add_argument("--window-start", type=int, default=0, help="first SDE step s")
    tree.add_argument("--seed", type=int, default=0)
    tree.add_argument("--reward", default="brightness")
    tree.add_argument("--backup", default="mean", help="mean | logprob_softmax | depth_norm")
    tree.add_argument("--cfg-scale", type=float, default=None, help="default 4.5")
    tree.add_argument("--eta", type=float, default=None, help="default 0.7 (flow), 1.0 (DDIM)")
    tree.add_argument("--device", default="auto")
    tree.add_argument("--out", required=True)
    tree.set_defaults(func=cmd_sample_tree)

    pretrain = sub.add_parser(
        "pretrain",
        help="pre-train the shipped digits model from scratch",
        description="Train the digits model (flow matching, or epsilon/DDIM for digits-ddim) on "
        "scikit-learn's digits. Reproducible for a given --seed; writes float16 safetensors "
        "(by default over the shipped weights) and a PNG of samples beside them.",
    )
    pretrain.add_argument("variant", choices=["digits", "digits-ddim"])
    pretrain.add_argument("--steps", type=int, default=0, help="optimizer steps (default 1200)")
    pretrain.add_argument("--batch-size", type=int, default=64)
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument("--threads", type=int, default=0, help="torch CPU threads")
    pretrain.add_argument("--out", help="weights file (default: the shipped weights)")
    pretrain.set_defaults(func=cmd_pretrain)

    export = sub.add_parser(
        "export",
        help="export a run's weights for diffusers (LoRA or a whole pipeline)",
        description="Export the latest (or --epoch) checkpoint of a run. --format lora writes "
        "pytorch_lora_weights.safetensors that `pipe.load_lora_weights(OUT)` loads (LoRA runs); "
        "--format pipeline writes a complete pipeline folder (save_pretrained; LoRA is fused "
        "in). Both carry a model card, README.md.",
    )
    export.add_argument(
        "source",
        metavar="RUN_DIR_OR_JOB_ID",
        help="a run folder (treegrpo train --out), a checkpoint folder, or a studio job id",
    )
    export.add_argument("--format", choices=["lora", "pipeline"], default="lora")
    export.add_argument("--epoch", type=int, default=None, help="default: the latest checkpoint")
    export.add_argument("--out", required=True, help="folder to create")
    export.set_defaults(func=cmd_export)

    launcher = sub.add_parser(
        "launcher",
        help="print the SLURM script or Kubeflow TrainJob that runs a multi-node train",
        description="For sites whose scheduler owns the GPUs: prints an sbatch script (srun "
        "starts one torchrun agent per machine, c10d rendezvous on the first host) or a "
        "Kubeflow Trainer TrainJob (numNodes x numProcPerNode) running `treegrpo train` with "
        "these settings; nodes and gpus come from the config. --out must be a folder every "
        "machine sees at the same path.",
    )
    launcher.add_argument("site", choices=["slurm", "kubeflow"])
    launcher.add_argument("--config", help="YAML file of settings (may name a `preset:`)")
    launcher.add_argument("--preset", help="start from a named preset")
    launcher.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting"
    )
    launcher.add_argument("--out", required=True, help="run folder (shared by every machine)")
    launcher.add_argument("--name", default="treegrpo-train", help="TrainJob name (kubeflow)")
    launcher.add_argument("--image", default="treegrpo-worker-gpu", help="image (kubeflow)")
    launcher.set_defaults(func=cmd_launcher)

    for entry in entry_points(group="treegrpo.commands"):
        entry.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"treegrpo: invalid setting {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"treegrpo: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
