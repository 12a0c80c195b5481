"""``ImageLitModule``: one stage of the image student (:class:`student.image_model.ImageStudent`)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from student.config import StageConfig
from student.image_data import ViewBatch
from student.image_model import ImageStudent
from student.lit_module import StageLitModule


def masked_mse(pred: Tensor, rgb: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the pixels ``mask`` keeps.

    Args:
        pred: ``[B, h, w, 3]`` predicted colors.
        rgb: ``[B, h, w, 3]`` targets.
        mask: ``[B, h, w]`` bool, the trained pixels (at least one).

    Returns:
        ``[]`` the mean over those pixels and the three channels.
    """
    err = ((pred - rgb) ** 2).sum(-1)  # [B, h, w]
    return (err * mask).sum() / (3 * mask.sum().clamp(min=1))


def depth_l1(depth: Tensor, target: Tensor, alpha: Tensor, mask: Tensor) -> Tensor:
    """Mean absolute depth error over the trained pixels the teacher holds opaque.

    Args:
        depth: ``[B, h, w]`` predicted distances along the pixels' rays.
        target: ``[B, h, w]`` the teacher's.
        alpha: ``[B, h, w]`` the teacher's opacity (pixels at or below :data:`OPAQUE` are left out).
        mask: ``[B, h, w]`` bool, the trained pixels.

    Returns:
        ``[]`` the mean (0 when no pixel counts).
    """
    keep = (mask & (alpha > OPAQUE)).to(depth.dtype)
    return ((depth - target).abs() * keep).sum() / keep.sum().clamp(min=1)


OPAQUE = 0.5  # the teacher's opacity above which its depth supervises


class ImageLitModule(StageLitModule):
    """Crops in, MSE over their trained pixels (:mod:`student.image_data`); validation PSNR on whole test
    views drawn with ``render``. Optimizer, schedule and logging: :class:`student.lit_module.StageLitModule`
    (the planes are the table: the stage's ``encoding_lr``, Instant-NGP's Adam; the network: ``lr``).

    R2L's hard-ray mining does not apply: the loss is taken over whole crops, since the decoder draws
    ``s x s`` pixels (and, through its convolutions, their neighbours) from each ray; a ray cannot be
    replayed alone.

    Args:
        model: the image student.
        stage: this stage's schedule.
        name: the stage's name in messages (``"student distill"``).
        time_fraction: see :class:`student.lit_module.StageLitModule`.
        depth_weight: weight of :func:`depth_l1` for a student with a detail head, on batches that carry
            the teacher's depth (``train.crops.depth_weight``).
    """

    decoder = "image"
    model: ImageStudent

    def table_parameters(self) -> list[nn.Parameter]:
        planes = list(self.model.encoding.parameters())
        return planes + (list(self.model.detail.planes.parameters()) if self.model.detail is not None else [])

    def __init__(self, model: ImageStudent, stage: StageConfig, name: str = "student",
                 time_fraction: Callable[[], float] | None = None, depth_weight: float = 0.0):
        super().__init__(model, stage, name, time_fraction)
        self.depth_weight = depth_weight

    def training_step(self, batch: ViewBatch, batch_idx: int) -> Tensor:
        pred, depth = self.model.forward_with_depth(batch["c2w"], batch["K"], batch["centers"])
        loss = masked_mse(pred.float(), batch["rgb"], batch["mask"])  # pred [B, h, w, 3]
        if depth is not None and "depth" in batch and self.depth_weight > 0:
            geometry = depth_l1(depth.float(), batch["depth"], batch["alpha"], batch["mask"])
            self.log("train/depth_l1", geometry.detach(), prog_bar=False)
            loss = loss + self.depth_weight * geometry
        self.log_loss(loss)
        return loss

    def validation_step(self, batch: ViewBatch, batch_idx: int) -> None:
        rgb = batch["rgb"]  # [1, H, W, 3]
        self.add_validation(self.model.render(batch["c2w"], batch["K"], rgb.shape[1], rgb.shape[2]), rgb)
