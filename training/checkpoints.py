"""Resume checkpoints of the Lightning loops (teacher and student): written atomically, read defensively.

Lightning's own ``TorchCheckpointIO`` writes ``last.ckpt`` through a temporary file in ``$TMPDIR`` and
``shutil.move``: when ``$TMPDIR`` is another filesystem (``/dev/shm``, a node-local disk) the move is a
copy that first truncates the good file, and nothing is fsynced, so a kill during a save leaves a
truncated ``last.ckpt``. :class:`AtomicCheckpointIO` writes beside the final file instead, fsyncs and
renames (:func:`core.io.atomic_write`): a kill leaves the previous checkpoint or the new one.

:func:`last_checkpoint` is the periodic ``last.ckpt`` callback of both loops, with Lightning's version
counter off: otherwise a changed interval (``train.checkpoint_seconds``) or a moved run folder makes
Lightning write ``last-v1.ckpt`` while the next rerun resumes from the stale ``last.ckpt``.

:class:`RandomState` stores the global random generators in ``last.ckpt`` and restores them at the first
step after a resume, so that a killed and resumed run draws the same random numbers (random backgrounds,
sample jitter) as an uninterrupted one.

Policy for an unreadable resume checkpoint (truncated, junk, not a Lightning checkpoint), the same in
both stages: a resume point is disposable, so :func:`resume_checkpoint` logs one warning naming the file,
moves it aside to ``last.ckpt.unreadable`` (kept for inspection, replaced by the next one) and the stage
starts fresh. Finished stages never depend on it: their results live in their own checkpoints.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from core.io import atomic_write

log = logging.getLogger(__name__)

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves go through a temporary file in the checkpoint's own folder."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
                        ) -> None:
        """Atomically write ``checkpoint`` to ``path`` (a local file).

        Raises:
            TypeError: ``storage_options`` given (as ``TorchCheckpointIO``: nothing to pass them to).
        """
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))


class RandomState(L.Callback):
    """Saves the global torch generators (CPU and CUDA) with the checkpoint; a resumed run restores them
    at its first training batch (after Lightning's own start-up draws, as an uninterrupted run had them)."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {"cpu": torch.get_rng_state(), "cuda": cuda}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pending is None:
            return
        torch.set_rng_state(self._pending["cpu"])
        if self._pending["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self._pending["cuda"])
        self._pending = None


def last_checkpoint(dirpath: Path, **trigger: Any) -> ModelCheckpoint:
    """The callback that keeps ``dirpath/last.ckpt`` up to date (no other checkpoints, no ``last-v1``).

    Args:
        dirpath: the stage's checkpoint folder.
        trigger: when to save: ``every_n_train_steps=`` or ``train_time_interval=``.
    """
    return ModelCheckpoint(dirpath=dirpath, save_last=True, save_top_k=0, enable_version_counter=False,
                           **trigger)


def resume_checkpoint(path: Path) -> Path | None:
    """``path`` if it is a readable Lightning checkpoint to resume from, else None (start fresh).

    Temporary files of saves killed midway are removed. An unreadable ``path`` is moved aside to
    ``<name>.unreadable`` with one warning (the policy in the module docstring).
    """
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler raises almost anything on a truncated file
        problem: str | None = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    else:
        lightning_keys = isinstance(state, dict) and {"state_dict", "global_step"} <= state.keys()
        problem = None if lightning_keys else "not a Lightning checkpoint"
    if problem is None:
        return path
    aside = path.with_name(f"{path.name}.unreadable")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another rank of this job moved it first
        return None
    log.warning("%s: unreadable resume checkpoint (%s); starting this stage fresh (file kept as %s)",
                path, problem, aside.name)
    return None
