"""Lightning callbacks of the teacher: the training budget (steps and wall-clock seconds)."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L

from teacher.recipe import Budget

log = logging.getLogger(__name__)


class TrainingBudget(Budget, L.Callback):
    """A :class:`teacher.recipe.Budget` that stops Lightning's loop: after ``max_seconds`` of wall-clock
    training time, counted across resumes (the seconds travel in the resume checkpoint).

    The module reads the progress through the :meth:`progress` it is handed
    (:class:`teacher.lit_module.TeacherLitModule`); Lightning's ``max_steps`` stops at the step budget.

    Args:
        max_seconds: wall-clock budget of the training loop (None: unlimited).
        max_steps: step budget (``-1``: unlimited).
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start()
        if self.max_seconds and self.previous >= self.max_seconds:  # resumed after the budget ran out
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.seconds_used_up():
            log.info("time budget of %.0f s reached after %d steps", self.max_seconds, trainer.global_step)
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous = float(state_dict["elapsed"])
