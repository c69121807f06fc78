"""Experiment trackers as trainer callbacks, one module per tracker, all offline-first:

- tensorboard: event files in the run folder (tensorboard/): every epoch metric as a scalar,
  and the held-out gallery as images at gallery epochs;
- wandb: an offline run in the run folder (wandb/offline-run-*), which `wandb sync` uploads
  later;
- mlflow: a run at any tracking URI, a local file store in the run folder (mlruns/) by default.

Each package is an optional extra (pip install 'treegrpo-studio[trackers]'); the config check
(treegrpo.config.missing_tracker_packages) refuses a run whose tracker is not installed before
it starts. Trackers are made lazily: nothing is imported or written until the run starts.

    callbacks = [*make_trackers(config, run_dir, run_name="job-7")]
"""

from __future__ import annotations

from pathlib import Path

from treegrpo.callbacks import Callback
from treegrpo.config import RunConfig, missing_tracker_packages


def make_trackers(config: RunConfig, run_dir: Path, run_name: str) -> list[Callback]:
    """The callbacks of config.trackers, writing under `run_dir`. Raises the ConfigError of the
    first tracker whose package is missing."""
    missing = missing_tracker_packages(config.trackers)
    if missing:
        raise missing[0]
    name = config.tracking.run_name or run_name
    out: list[Callback] = []
    for tracker in config.trackers:
        if tracker == "tensorboard":
            from treegrpo.trackers.tensorboard import TensorBoardTracker

            out.append(TensorBoardTracker(run_dir / "tensorboard"))
        elif tracker == "wandb":
            from treegrpo.trackers.wandb import WandbTracker

            out.append(WandbTracker(run_dir, config.tracking.project, name))
        elif tracker == "mlflow":
            from treegrpo.trackers.mlflow import MlflowTracker

            uri = config.tracking.mlflow_uri or (run_dir / "mlruns").resolve().as_uri()
            out.append(MlflowTracker(uri, config.tracking.project, name))
    return out


def tracker_folders(config: RunConfig) -> list[str]:
    """The run-folder subfolders the trackers write (for mirroring to a remote store)."""
    folders = {"tensorboard": "tensorboard", "wandb": "wandb"}
    out = [folders[t] for t in config.trackers if t in folders]
    if "mlflow" in config.trackers and config.tracking.mlflow_uri is None:
        out.append("mlruns")
    return out


def flat_params(config: dict[str, object], prefix: str = "") -> dict[str, str]:
    """A nested config as dotted name -> short text (trackers' parameter tables)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = str(value)[:250]
    return out
