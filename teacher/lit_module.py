"""``TeacherLitModule``: loss, optimizer, learning-rate decay and the occupancy refresh hook.

Thin by design: it is handed a :class:`teacher.model.Teacher` and ray batches; data loading lives in
:mod:`teacher.data`, checkpoints and evaluation in :mod:`teacher.train`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor

from core.errors import raise_if_diverged
from core.metrics import mse_to_psnr
from teacher.model import Teacher
from teacher.recipe import OptimConfig, distortion_weight, lr_factor, make_optimizer, target_on_background


class TeacherLitModule(L.LightningModule):
    """Trains a :class:`Teacher` on batches ``(rays_o [B, 3], rays_d [B, 3], rgba [B, 4])``.

    Each ray gets a random background color; the target is the RGBA pixel composited onto it
    (:func:`teacher.recipe.target_on_background`).

    Args:
        teacher: the model.
        cfg: optimizer settings.
        progress: training progress in ``[0, 1]`` at a step (the budget's,
            :meth:`training.budget.Budget.progress`); the learning rate decays with it.
        distortion: weight of the distortion loss (mean over the rays; 0: off).
        distortion_start: training progress from which the distortion loss applies.
    """

    def __init__(self, teacher: Teacher, cfg: OptimConfig, progress: Callable[[int], float],
                 distortion: float = 0.0, distortion_start: float = 0.0):
        super().__init__()
        self.teacher = teacher
        self.cfg = cfg
        self.progress = progress
        self.distortion = distortion
        self.distortion_start = distortion_start
        self.samples_seen = 0  # samples evaluated with grad (throughput statistics)

    def on_train_batch_start(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        if self.teacher.update_occupancy(self.global_step):
            self.log("train/occupied", self.teacher.occupancy.occupancy_fraction())
        factor = lr_factor(self.progress(self.global_step), self.cfg)
        for group in self.optimizers().param_groups:  # type: ignore[union-attr]
            group["lr"] = self.cfg.lr * factor

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        rays_o, rays_d, rgba = batch
        background = torch.rand_like(rgba[:, :3])
        target = target_on_background(rgba, background)
        weight = distortion_weight(self.progress(self.global_step), self.distortion, self.distortion_start)
        out = self.teacher.render_rays(rays_o, rays_d, background, distortion=weight > 0)
        mse = torch.nn.functional.mse_loss(out["rgb"], target)
        loss = mse + weight * out["distortion"].mean() if weight > 0 else mse
        # summed over processes, so that every rank stops at the same step (a NaN anywhere stays NaN)
        raise_if_diverged(float(self.trainer.strategy.reduce(loss.detach(), reduce_op="sum")), "teacher",
                          self.global_step)
        self.samples_seen += int(out["n_samples"])
        self.log("train/loss", loss, prog_bar=False)
        self.log("train/psnr", mse_to_psnr(mse.detach()), prog_bar=True)
        self.log("train/samples_per_ray", float(out["n_samples"]) / rays_o.shape[0], prog_bar=True)
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["samples_seen"] = self.samples_seen  # the statistics count across resumes

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.samples_seen = int(checkpoint.get("samples_seen", 0))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer(self.teacher, self.cfg)
