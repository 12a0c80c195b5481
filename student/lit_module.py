"""The students' Lightning stages: :class:`StageLitModule` (optimizer, schedule, logging, validation PSNR:
both decoders), :class:`StudentLitModule` (the ray student's steps); the image student's steps are
:class:`student.image_lit.ImageLitModule`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from core.errors import raise_if_diverged
from core.metrics import mse_to_psnr
from student.config import HardMiningConfig, StageConfig
from student.model import R2LStudent


def warmup_cosine(step: int, warmup: int, decay: int, final_ratio: float,
                  time_fraction: float = 0.0) -> float:
    """Learning-rate factor: linear warm-up from 1% over ``warmup`` steps, then cosine to ``final_ratio``.

    The decay's progress is the larger of the step fraction and ``time_fraction`` (elapsed share of a
    stage's time budget), so a time-limited stage ends fully decayed however fast the machine is.
    """
    if step < warmup:
        return 0.01 + 0.99 * step / max(1, warmup)
    progress = min(1.0, max((step - warmup) / max(1, decay - warmup), time_fraction))
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class HardRayPool:
    """R2L's hard-ray mining: a FIFO pool of the highest-error rays, replayed in later batches.

    Args:
        cfg: pool size and share of the batch replayed.
    """

    def __init__(self, cfg: HardMiningConfig):
        self.cfg = cfg
        self.pool: Tensor | None = None  # [P, 9] packed rays_o, rays_d, rgb

    def extend(self, batch: dict[str, Tensor], batch_size: int) -> dict[str, Tensor]:
        """``batch`` plus ``fraction x batch_size`` rays drawn from the pool (unchanged while it is empty)."""
        n = int(self.cfg.fraction * batch_size)
        if self.pool is None or n == 0:
            return batch
        extra = self.pool[torch.randint(0, self.pool.shape[0], (n,), device=self.pool.device)]
        return {k: torch.cat([batch[k], extra[:, 3 * i:3 * i + 3]])
                for i, k in enumerate(("rays_o", "rays_d", "rgb"))}

    def update(self, batch: dict[str, Tensor], per_ray_loss: Tensor) -> None:
        """Add the ``fraction`` highest-loss rays of ``batch`` (``per_ray_loss [B]``) to the pool."""
        k = max(1, int(self.cfg.fraction * per_ray_loss.shape[0]))
        idx = per_ray_loss.detach().topk(k).indices
        hard = torch.cat([batch["rays_o"][idx], batch["rays_d"][idx], batch["rgb"][idx]], dim=-1).detach()
        pool = hard if self.pool is None else torch.cat([hard, self.pool])
        self.pool = pool[: self.cfg.pool_size]


DECODER_KEY = "student_decoder"  # the decoder that wrote a Lightning checkpoint (absent: a ray student's)


class StageLitModule(L.LightningModule):
    """What one stage of either student does besides its forward pass: Adam over the network and its learned
    encoding's table (each at the stage's rate) with warm-up + cosine decay, the divergence check, the
    logged loss and PSNR, the validation PSNR, and the decoder's name in each Lightning checkpoint
    (:data:`DECODER_KEY`: a resume with the other decoder is refused by name, before its weights are read).

    A subclass gives :meth:`table_parameters`, ``training_step`` (ending in :meth:`log_loss`) and
    ``validation_step`` (calling :meth:`add_validation`).

    Args:
        model: the student network (shared across stages: the next stage continues from its weights).
        stage: this stage's schedule.
        name: the stage's name in messages (``"student distill"``).
        time_fraction: the elapsed share of the stage's time budget
            (:meth:`training.budget.Budget.seconds_fraction`; none: 0); the rate decays with it too.
    """

    decoder = "ray"

    def __init__(self, model: nn.Module, stage: StageConfig, name: str = "student",
                 time_fraction: Callable[[], float] | None = None):
        super().__init__()
        self.model, self.stage, self.stage_name = model, stage, name
        self.time_fraction = time_fraction or (lambda: 0.0)
        self._val_sse = 0.0
        self._val_count = 0

    def table_parameters(self) -> list[nn.Parameter]:
        """The learned encoding's parameters (their own Adam group and rate; empty: none)."""
        raise NotImplementedError

    def log_loss(self, loss: Tensor) -> None:
        """Stop on a diverged loss (on every rank at the same step); log it, its PSNR and the rate on the
        steps the loggers write (the trainer's ``log_every_n_steps``)."""
        # summed over processes, so that every rank stops at the same step (a NaN anywhere stays NaN)
        total = self.trainer.strategy.reduce(loss.detach(), reduce_op="sum")
        raise_if_diverged(float(total), self.stage_name, self.global_step)
        every = int(getattr(self.trainer, "log_every_n_steps", 1))  # set by Lightning at run time
        if (self.global_step + 1) % every:
            return  # Lightning's log() costs about 1 ms a call (3 ms of a 26 ms image-student step)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/psnr", mse_to_psnr(loss.detach()), prog_bar=True)
        self.log("lr", self.optimizers().param_groups[0]["lr"])  # type: ignore[union-attr]

    def add_validation(self, pred: Tensor, rgb: Tensor) -> None:
        """Add predictions and targets (same shape, colors last) to the validation PSNR."""
        self._val_sse += float(((pred.float().clamp(0, 1) - rgb) ** 2).sum())
        self._val_count += rgb.numel()

    def on_validation_epoch_start(self) -> None:
        self._val_sse, self._val_count = 0.0, 0

    def on_validation_epoch_end(self) -> None:
        mse = self._val_sse / max(1, self._val_count)
        self.log("val/psnr", mse_to_psnr(mse), prog_bar=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[DECODER_KEY] = self.decoder

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        stage = self.stage
        # fused Adam: one kernel for all parameters (3x faster than foreach on this CPU for 6M params).
        # A learned encoding's table gets Instant-NGP's Adam (betas 0.9/0.99, eps 1e-15) and its own rate.
        table = self.table_parameters()
        table_ids = {id(p) for p in table}
        mlp = [p for p in self.model.parameters() if id(p) not in table_ids]
        groups: list[dict] = [{"params": mlp}]
        if table:
            groups.append({"params": table, "lr": stage.encoding_lr or stage.lr, "betas": (0.9, 0.99),
                           "eps": 1e-15})
        opt = torch.optim.Adam(groups, lr=stage.lr, fused=True)
        decay = stage.decay_steps or (stage.max_steps if stage.max_steps > 0 else 10_000)
        ratio = stage.lr_final / stage.lr
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: warmup_cosine(step, stage.warmup_steps, decay, ratio, self.time_fraction())
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class StudentLitModule(StageLitModule):
    """The ray student's stage (:class:`StageLitModule`): MSE over ray batches, hard-ray mining.

    Args:
        model: the ray student.
        stage: this stage's schedule.
        hard_mining: hard-ray mining settings.
        name: the stage's name in messages (``"student distill"``).
        time_fraction: see :class:`StageLitModule`.
    """

    model: R2LStudent

    def __init__(self, model: R2LStudent, stage: StageConfig, hard_mining: HardMiningConfig | None = None,
                 name: str = "student", time_fraction: Callable[[], float] | None = None):
        super().__init__(model, stage, name, time_fraction)
        self.pool = HardRayPool(hard_mining) if hard_mining is not None and hard_mining.enabled else None

    def table_parameters(self) -> list[nn.Parameter]:
        return list(self.model.encoder.parameters())

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if self.pool is not None:
            batch = self.pool.extend(batch, self.stage.batch_size)
        pred = self.model(batch["rays_o"], batch["rays_d"]).float()
        per_ray = ((pred - batch["rgb"]) ** 2).mean(-1)  # [B]
        loss = per_ray.mean()
        self.log_loss(loss)
        if self.pool is not None:
            self.pool.update(batch, per_ray)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.add_validation(self.model(batch["rays_o"], batch["rays_d"]), batch["rgb"])
