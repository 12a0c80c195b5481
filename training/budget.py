"""The wall-clock budget of both training stages: steps and seconds, the seconds counted across resumes.

:class:`Budget` is free of Lightning (the NeRF-XL teacher's own loop uses it); :class:`TrainingBudget` is
the same budget as a Lightning callback, which stops the loop once the seconds are spent and keeps them in
the resume checkpoint. The teacher's learning rate decays with :meth:`Budget.progress`, the student's with
:meth:`Budget.seconds_fraction` (a time-limited stage ends fully decayed however fast the machine is).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L

from core.errors import UserError

log = logging.getLogger(__name__)


class Budget:
    """Training budget of steps and wall-clock seconds, the seconds counted across resumes.

    Args:
        max_seconds: wall-clock budget of the training loop (None or <= 0: unlimited).
        max_steps: step budget (``-1``: unlimited).

    Raises:
        UserError: neither limit is set (training would never stop).
    """

    def __init__(self, max_seconds: float | None, max_steps: int):
        if (max_seconds is None or max_seconds <= 0) and max_steps < 0:
            raise UserError("set train.max_steps or train.max_seconds: training would never stop")
        self.max_seconds = max_seconds if max_seconds and max_seconds > 0 else None
        self.max_steps = max_steps
        self.previous = 0.0  # seconds spent before this process (restored from a checkpoint)
        self._start: float | None = None

    def start(self) -> None:
        """Start counting this process's seconds."""
        self._start = time.perf_counter()

    def stop(self) -> None:
        """Stop counting (the seconds so far stay in :attr:`elapsed`)."""
        self.previous = self.elapsed
        self._start = None

    @property
    def elapsed(self) -> float:
        """Training seconds so far, this process and earlier ones."""
        now = time.perf_counter() - self._start if self._start is not None else 0.0
        return self.previous + now

    def exclude(self, seconds: float) -> None:
        """Do not count ``seconds`` just spent on something else (e.g. evaluation in a benchmark)."""
        self.previous -= seconds

    def seconds_used_up(self) -> bool:
        """Whether the wall-clock budget is spent."""
        return bool(self.max_seconds and self.elapsed >= self.max_seconds)

    def used_up(self, step: int) -> bool:
        """Whether training stops before ``step`` (the step budget or the seconds are spent)."""
        return 0 < self.max_steps <= step or self.seconds_used_up()

    def progress(self, step: int) -> float:
        """Fraction of the budget used at ``step``: ``max(step / max_steps, seconds / max_seconds)``."""
        parts = [step / self.max_steps] if self.max_steps > 0 else []
        if self.max_seconds:
            parts.append(self.elapsed / self.max_seconds)
        return min(1.0, max(parts))

    def seconds_fraction(self) -> float:
        """Fraction of the wall-clock budget used (0 without one)."""
        return self.elapsed / self.max_seconds if self.max_seconds else 0.0


class TrainingBudget(Budget, L.Callback):
    """A :class:`Budget` that stops Lightning's loop after ``max_seconds`` of wall-clock training time,
    counted across resumes (the seconds travel in the resume checkpoint); Lightning's ``max_steps`` stops
    it at the step budget.

    The Lightning module reads the progress through what it is handed (:meth:`progress` for the teacher's
    :class:`teacher.lit_module.TeacherLitModule`, :meth:`seconds_fraction` for the student's).

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
        # rank 0's clock decides, so that every DDP process stops after the same step (as Lightning's Timer)
        if self.max_seconds and trainer.strategy.broadcast(self.seconds_used_up()):
            log.info("time budget of %.0f s reached after %d steps", self.max_seconds, trainer.global_step)
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous = float(state_dict["elapsed"])
