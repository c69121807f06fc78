"""MLflow: a run at any tracking URI; by default a local file store in the run folder (mlruns/),
which `mlflow ui --backend-store-uri <folder>/mlruns` shows offline (a database store such as
sqlite:///path/mlflow.db works too: set tracking.mlflow_uri).

Parameters: the resolved config, flattened. Metrics at step = epoch. The held-out gallery as
PNG artifacts under gallery/epoch-NNNNNN/ at gallery epochs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from treegrpo import egress
from treegrpo.callbacks import Callback, RunInfo, SampleBatch
from treegrpo.trackers import flat_params

GALLERY_IMAGES = 16


class MlflowTracker(Callback):
    def __init__(self, uri: str, experiment: str, name: str) -> None:
        self.uri = uri
        self.experiment = experiment
        self.name = name
        self.client: Any = None
        self.run_id: str | None = None

    def on_start(self, info: RunInfo) -> None:
        rules = egress.installed()
        if rules is not None and self.uri.startswith(("http://", "https://")):
            # MLflow's client opens its own connections (requests), so the request cannot be
            # pinned to the checked address as the remote reward's is: the name is resolved
            # and every address checked here, right before the client first connects.
            egress.checked_address(self.uri, rules, "tracking.mlflow_uri")
        if self.uri.startswith("file:"):
            # Recent MLflow keeps its file store in maintenance mode and refuses it unless told;
            # offline-first wants it (no database to set up, readable by `mlflow ui`). This
            # sets the library's own switch, for this process only.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = (
            found.experiment_id if found else self.client.create_experiment(self.experiment)
        )
        run = self.client.create_run(experiment_id, run_name=self.name)
        self.run_id = run.info.run_id
        params = flat_params(info.config)
        from mlflow.entities import Param

        items = [Param(key, value) for key, value in sorted(params.items())]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.client is None or self.run_id is None:
            return
        from mlflow.entities import Metric

        now = _millis()
        points = [Metric(name, float(value), now, epoch) for name, value in metrics.items()]
        for start in range(0, len(points), 500):
            self.client.log_batch(self.run_id, metrics=points[start : start + 500])

    def on_samples(self, batch: SampleBatch) -> None:
        if self.client is None or self.run_id is None:
            return
        from treegrpo.artifacts import thumbnail

        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / f"epoch-{batch.epoch:06d}"
            folder.mkdir()
            for index, image in enumerate(batch.images[:GALLERY_IMAGES]):
                thumbnail(image).save(folder / f"{index:03d}.png")
            self.client.log_artifacts(self.run_id, str(folder), f"gallery/epoch-{batch.epoch:06d}")

    def on_end(self, status: str, epoch: int) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(
                self.run_id, "FINISHED" if status == "completed" else "KILLED"
            )
            self.run_id = None


def _millis() -> int:
    import time

    return int(time.time() * 1000)
