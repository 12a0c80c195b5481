"""The teacher's training recipe, shared by both loops and free of Lightning.

The Lightning loop (:mod:`teacher.train`, through :class:`teacher.lit_module.TeacherLitModule`) and the
NeRF-XL loop (:mod:`teacher.xl.train`) use the same pieces: :func:`lr_factor`, driven by the progress of
the training shell's budget of steps and wall-clock seconds (:class:`training.budget.Budget`), the
optimizer of :func:`make_optimizer` (Adam, no weight decay on the hash table) and the random-background
target of :func:`target_on_background`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from core.checks import ConfigValueError, at_least, in_range, positive
from teacher.model import Teacher


@dataclass
class OptimConfig:
    """Adam as in Instant-NGP, with a decay over the end of training.

    Attributes:
        lr: initial learning rate.
        betas: Adam betas.
        eps: Adam epsilon.
        weight_decay: L2 on the MLP weights only (not the hash table).
        decay_start: fraction of the training budget after which the rate decays.
        final_lr_ratio: rate at the end of training relative to ``lr`` (exponential in between).
    """

    lr: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15
    weight_decay: float = 1e-6
    decay_start: float = 0.5
    final_lr_ratio: float = 0.1

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value."""
        positive(self, "lr", "final_lr_ratio")
        at_least(self, 0.0, "eps", "weight_decay")
        in_range(self, 0.0, 1.0, "decay_start")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigValueError("betas", "must be two numbers in [0, 1)", list(self.betas))


def lr_factor(progress: float, cfg: OptimConfig) -> float:
    """Learning-rate multiplier at training ``progress`` in ``[0, 1]`` (1 until ``decay_start``)."""
    if progress <= cfg.decay_start:
        return 1.0
    frac = min(1.0, (progress - cfg.decay_start) / max(1e-9, 1.0 - cfg.decay_start))
    return float(cfg.final_lr_ratio**frac)


def distortion_weight(progress: float, weight: float, start: float) -> float:
    """Weight of the distortion loss at training ``progress`` in ``[0, 1]``: 0 before ``start``, then
    ``weight`` (the photometric loss places the surfaces first; the distortion loss then clears the fog)."""
    return weight if progress >= start else 0.0


def make_optimizer(teacher: Teacher, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam over a teacher's (or a NeRF-XL region's) parameters: weight decay on the MLPs only.

    Fused where the device has the fused kernel (CPU and CUDA).
    """
    field = teacher.field
    groups: list[dict[str, Any]] = [
        {"params": [field.grid.params], "weight_decay": 0.0},
        {"params": field.mlp_parameters(), "weight_decay": cfg.weight_decay},
    ]
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    betas = cast(tuple[float, float], tuple(cfg.betas))
    return torch.optim.Adam(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, fused=fused)


def target_on_background(
    rgba: Tensor,  # [N, 4]
    background: Tensor,  # [N, 3]
) -> Tensor:
    """``[N, 3]`` training target: the RGBA pixel composited onto its ray's (random) background color.

    With a new random background per ray and step, the field learns transparency rather than a fixed
    background.
    """
    alpha = rgba[:, 3:]
    return rgba[:, :3] * alpha + background * (1.0 - alpha)
