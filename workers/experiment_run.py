"""A train job that is one run of an experiment: the shared held-out yardstick and the budget.

`ExperimentProbe` is a trainer callback placed before the job's recorder. After every
`eval_every` epochs (and after the last one), between epochs and so outside the training clock,
it adds `heldout/reward` (treegrpo/heldout.py: the experiment's prompts and noise, the same for
every run) to the epoch's metrics, which the recorder then writes. `base_point` gives the same
measurement of the untrained model for step 0. With a budget in seconds it stops the run before
an epoch would overrun it (the next epoch is assumed to take as long as the last one; the first
always runs), and `spent` then says the run is complete rather than stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backend.job_params import ExperimentRunParams
from treegrpo.callbacks import Callback

if TYPE_CHECKING:
    from treegrpo.trainer import Trainer

HELDOUT_METRIC = "heldout/reward"


class ExperimentProbe(Callback):
    def __init__(self, params: ExperimentRunParams, epochs: int) -> None:
        self.params = params
        self.epochs = epochs
        self.trainer: Trainer | None = None  # set once the trainer exists
        self.last: dict[str, float] | None = None
        self.spent = False

    def measure(self) -> float:
        from treegrpo.heldout import heldout_reward

        assert self.trainer is not None, "ExperimentProbe.trainer is unset"
        return heldout_reward(self.trainer, self.params.eval_count, self.params.eval_noise_seed)

    def base_point(self) -> dict[str, float]:
        """Step 0: the untrained model on the shared yardstick, on every clock at zero."""
        return {
            HELDOUT_METRIC: self.measure(),
            "cpu_clock": 0.0,
            "wall_clock": 0.0,
            "images_seen": 0.0,
        }

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 0 or "time/epoch" not in metrics:
            return  # the trainer's own epoch-0 gallery
        self.last = metrics
        final = epoch >= self.epochs or self.budget_reached()
        if epoch % self.params.eval_every == 0 or final:
            metrics[HELDOUT_METRIC] = self.measure()

    def budget_reached(self) -> bool:
        budget = self.params.budget_seconds
        if budget is None or self.last is None:
            return False
        return self.last["wall_clock"] + self.last["time/epoch"] > budget

    def should_stop(self) -> bool:
        if self.budget_reached():
            self.spent = True
            return True
        return False
