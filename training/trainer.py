"""The one Lightning ``Trainer`` setup of both training stages.

:func:`build_trainer` gives the teacher's loop and each student stage the same shell: the wall-clock
budget (:class:`training.budget.TrainingBudget`, counted across resumes), the random state and the
periodic ``last.ckpt`` of :mod:`training.checkpoints` written atomically, CSV and TensorBoard logs, no
sanity validation, no model summary, endless epochs (the data modules stream). A stage adds only what is
its own (validation cadence, precision, DDP, extra callbacks) as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from training.budget import TrainingBudget
from training.checkpoints import AtomicCheckpointIO, RandomState, last_checkpoint


def build_trainer(out: Path, budget: TrainingBudget, checkpoints: Path, save_every: dict[str, Any],
                  csv_logs: tuple[Path, str], tb_logs: tuple[Path, str], *, accelerator: str,
                  devices: int | list[int], log_every: int, progress_bar: bool,
                  callbacks: Sequence[L.Callback] = (), **stage_options: Any) -> L.Trainer:
    """A Trainer for one training loop.

    Args:
        out: the stage's output folder (Lightning's ``default_root_dir``).
        budget: the loop's budget; Lightning stops at its ``max_steps``, the callback at its seconds.
        checkpoints: the folder of the loop's ``last.ckpt``.
        save_every: when to save it: ``{"every_n_train_steps": n}`` or ``{"train_time_interval": td}``.
        csv_logs: ``(save_dir, name)`` of the CSV logger.
        tb_logs: ``(save_dir, name)`` of the TensorBoard logger.
        accelerator: Lightning's accelerator (``cpu`` or ``gpu``).
        devices: processes per node, or the GPU indices.
        log_every: steps between logged metrics.
        progress_bar: show Lightning's progress bar.
        callbacks: the stage's own callbacks (after the budget, the random state and the checkpoint).
        stage_options: more ``L.Trainer`` arguments (``precision``, ``strategy``, validation cadence...).
    """
    return L.Trainer(
        accelerator=accelerator,
        devices=devices,
        max_steps=budget.max_steps,
        max_epochs=-1,
        num_sanity_val_steps=0,
        logger=[CSVLogger(csv_logs[0], name=csv_logs[1]), TensorBoardLogger(tb_logs[0], name=tb_logs[1])],
        callbacks=[budget, RandomState(), last_checkpoint(checkpoints, **save_every), *callbacks],
        log_every_n_steps=log_every,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        default_root_dir=str(out),
        plugins=[AtomicCheckpointIO()],
        **stage_options,
    )
