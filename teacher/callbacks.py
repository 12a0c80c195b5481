"""Lightning callbacks of the teacher: the training budget (steps and wall-clock seconds)."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


class TrainingBudget(L.Callback):
    """Stops training after ``max_seconds`` of wall-clock training time, counted across resumes.

    It also publishes the training progress ``max(step / max_steps, seconds / max_seconds)`` on the
    module's ``progress`` attribute (the learning-rate decay reads it).

    Args:
        max_seconds: wall-clock budget of the training loop (None: unlimited).
        max_steps: step budget (``-1``: unlimited).
    """

    def __init__(self, max_seconds: float | None, max_steps: int):
        if (max_seconds is None or max_seconds <= 0) and max_steps < 0:
            raise ValueError("set train.max_steps or train.max_seconds: training would never stop")
        self.max_seconds = max_seconds if max_seconds and max_seconds > 0 else None
        self.max_steps = max_steps
        self.previous = 0.0  # seconds spent before this process (restored from a checkpoint)
        self._start: float | None = None

    @property
    def elapsed(self) -> float:
        """Training seconds so far, this process and earlier ones."""
        now = time.perf_counter() - self._start if self._start is not None else 0.0
        return self.previous + now

    def exclude(self, seconds: float) -> None:
        """Do not count ``seconds`` just spent on something else (e.g. evaluation in a benchmark)."""
        self.previous -= seconds

    def progress(self, step: int) -> float:
        """Fraction of the budget used at ``step``."""
        parts = [step / self.max_steps] if self.max_steps > 0 else []
        if self.max_seconds:
            parts.append(self.elapsed / self.max_seconds)
        return min(1.0, max(parts))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        if self.max_seconds and self.previous >= self.max_seconds:  # resumed after the budget ran out
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.previous = self.elapsed
        self._start = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        pl_module.progress = self.progress(trainer.global_step)  # type: ignore[assignment]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.max_seconds and self.elapsed >= self.max_seconds:
            log.info("time budget of %.0f s reached after %d steps", self.max_seconds, trainer.global_step)
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous = float(state_dict["elapsed"])
