"""``TeacherLitModule``: loss, optimizer, learning-rate decay and the occupancy refresh hook.

Thin by design: it is handed a :class:`teacher.model.Teacher` and ray batches; data loading lives in
:mod:`teacher.data`, checkpoints and evaluation in :mod:`teacher.train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import lightning as L
import torch
from torch import Tensor

from core.config import ConfigValueError, at_least, in_range, positive
from core.errors import raise_if_diverged
from core.metrics import mse_to_psnr
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
        """Raise :class:`core.config.ConfigValueError` for a bad value."""
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


class TeacherLitModule(L.LightningModule):
    """Trains a :class:`Teacher` on batches ``(rays_o [B, 3], rays_d [B, 3], rgba [B, 4])``.

    Each ray gets a random background color; the target is the RGBA pixel composited onto it, so the
    field learns transparency rather than a fixed background.

    Args:
        teacher: the model.
        cfg: optimizer settings.
    """

    def __init__(self, teacher: Teacher, cfg: OptimConfig):
        super().__init__()
        self.teacher = teacher
        self.cfg = cfg
        self.progress = 0.0  # set by the budget callback: max(step / max_steps, seconds / max_seconds)
        self.samples_seen = 0  # samples evaluated with grad (throughput statistics)

    def on_train_batch_start(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        if self.teacher.update_occupancy(self.global_step):
            self.log("train/occupied", self.teacher.occupancy.occupancy_fraction())
        factor = lr_factor(self.progress, self.cfg)
        for group in self.optimizers().param_groups:  # type: ignore[union-attr]
            group["lr"] = self.cfg.lr * factor

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        rays_o, rays_d, rgba = batch
        background = torch.rand_like(rgba[:, :3])
        alpha = rgba[:, 3:]
        target = rgba[:, :3] * alpha + background * (1.0 - alpha)
        out = self.teacher.render_rays(rays_o, rays_d, background)
        loss = torch.nn.functional.mse_loss(out["rgb"], target)
        # summed over processes, so that every rank stops at the same step (a NaN anywhere stays NaN)
        raise_if_diverged(float(self.trainer.strategy.reduce(loss.detach(), reduce_op="sum")), "teacher",
                          self.global_step)
        self.samples_seen += int(out["n_samples"])
        self.log("train/loss", loss, prog_bar=False)
        self.log("train/psnr", mse_to_psnr(loss.detach()), prog_bar=True)
        self.log("train/samples_per_ray", float(out["n_samples"]) / rays_o.shape[0], prog_bar=True)
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["samples_seen"] = self.samples_seen  # the statistics count across resumes

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.samples_seen = int(checkpoint.get("samples_seen", 0))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        field = self.teacher.field
        groups: list[dict[str, Any]] = [
            {"params": [field.grid.params], "weight_decay": 0.0},
            {"params": field.mlp_parameters(), "weight_decay": self.cfg.weight_decay},
        ]
        fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
        betas = cast(tuple[float, float], tuple(self.cfg.betas))
        return torch.optim.Adam(groups, lr=self.cfg.lr, betas=betas, eps=self.cfg.eps,
                                fused=fused)
