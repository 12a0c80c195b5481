"""``StageLitModule.log_loss``: the divergence check on every step, Lightning's ``log()`` only on the steps
the loggers write (it costs about 1 ms a call)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from core.errors import TrainingDiverged
from student.config import StageConfig
from student.lit_module import StageLitModule


def _module(monkeypatch: pytest.MonkeyPatch, logged: list[tuple[int, str]]) -> StageLitModule:
    module = StageLitModule(nn.Linear(1, 1), StageConfig(), name="student distill")
    monkeypatch.setattr(module, "log", lambda key, value, **kw: logged.append((module.global_step, key)))
    monkeypatch.setattr(module, "optimizers", lambda: SimpleNamespace(param_groups=[{"lr": 1e-3}]))
    return module


def _at_step(module: StageLitModule, step: int) -> None:
    def reduce(t: Tensor, reduce_op: Any = None) -> Tensor:
        return t

    trainer = SimpleNamespace(strategy=SimpleNamespace(reduce=reduce), log_every_n_steps=10, global_step=step)
    module._trainer = trainer  # type: ignore[assignment]


def test_the_loss_is_logged_on_the_loggers_steps_only(monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[tuple[int, str]] = []
    module = _module(monkeypatch, logged)
    for step in range(25):
        _at_step(module, step)
        module.log_loss(torch.tensor(0.01))
    assert logged == [(s, key) for s in (9, 19) for key in ("train/loss", "train/psnr", "lr")]


def test_a_non_finite_loss_stops_on_a_step_that_logs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _module(monkeypatch, [])
    _at_step(module, 3)
    with pytest.raises(TrainingDiverged, match="student distill: training diverged at step 3"):
        module.log_loss(torch.tensor(float("nan")))
