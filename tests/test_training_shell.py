"""``training``: the trainer factory both stages share, and the process-group helpers on a world of one."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from training import distributed
from training.budget import TrainingBudget
from training.checkpoints import AtomicCheckpointIO, RandomState
from training.trainer import build_trainer


def test_the_trainer_shell_has_the_budget_the_random_state_the_last_checkpoint_and_both_logs(
        tmp_path: Path) -> None:
    budget = TrainingBudget(max_seconds=5.0, max_steps=7)
    extra = L.Callback()
    every = {"train_time_interval": timedelta(seconds=3)}
    trainer = build_trainer(tmp_path, budget, tmp_path / "ckpt", every, csv_logs=(tmp_path, "logs"),
                            tb_logs=(tmp_path / "tb", "stage"), accelerator="cpu", devices=1, log_every=3,
                            progress_bar=False, callbacks=[extra], limit_val_batches=0)
    assert trainer.max_steps == 7 and trainer.limit_val_batches == 0
    callbacks = trainer.callbacks  # type: ignore[attr-defined]
    assert callbacks[:2] == [budget, callbacks[1]] and isinstance(callbacks[1], RandomState)
    checkpoint = next(c for c in callbacks if isinstance(c, ModelCheckpoint))
    assert checkpoint.dirpath == str(tmp_path / "ckpt") and checkpoint.save_last and extra in callbacks
    assert not any(type(c).__name__ == "Timer" for c in callbacks)  # one wall-clock budget: ours
    assert [type(lg) for lg in trainer.loggers] == [CSVLogger, TensorBoardLogger]
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_process_group_helpers_act_on_a_world_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert distributed.env_world_size() == 1 and not distributed.launched_by_torchrun()
    with distributed.process_group() as (rank, world):
        assert (rank, world) == (0, 1) == distributed.rank_and_world()
        distributed.barrier()
        assert distributed.all_reduce([1.0, 2.0], "max") == [1.0, 2.0]
        t = torch.ones(2)
        assert distributed.broadcast_tensor(t) is t
    with pytest.raises(ValueError, match="auto, gloo or nccl"):
        distributed.join_process_group("mpi")
