"""User-facing errors and the one-line CLI wrapper."""

from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class UserError(ValueError):
    """Bad input from the user (a file, a folder, a setting). Shown as one line, exit code 1."""


class SceneError(UserError):
    """A scene folder, camera file or image that cannot be used; the message names the file."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, or of another configuration."""


class TrainingDiverged(UserError):
    """Training produced a non-finite loss; raised before any weights of that step are saved.

    Args:
        stage: the stage that diverged (``"teacher"``, ``"student distill"``, ...).
        step: the optimizer step whose loss was not finite.
        loss: that loss.
    """

    def __init__(self, stage: str, step: int, loss: float):
        self.stage, self.step, self.loss = stage, step, loss
        super().__init__(f"{stage}: training diverged at step {step} (loss {loss}); no checkpoint of it was "
                         f"saved: lower the learning rate or check the data")


def raise_if_diverged(loss: float, stage: str, step: int) -> None:
    """Stop training at a non-finite loss, before its gradients reach the weights.

    Raises:
        TrainingDiverged: ``loss`` is NaN or infinite.
    """
    if not math.isfinite(loss):
        raise TrainingDiverged(stage, step, loss)


def exit_on_user_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate a CLI ``main``: a :class:`UserError` prints ``error: <message>`` and exits with 1.

    Hydra wraps exceptions raised inside its ``main``; decorate the function *inside* the Hydra
    decorator so the error is caught before Hydra prints a traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            message = " ".join(str(exc).split())  # always one line, whatever the message holds
            print(f"error: {message}", file=sys.stderr)
            sys.exit(1)

    return wrapper
