"""``ImageLitModule``: one stage of the image student (:class:`student.image_model.ImageStudent`)."""

from __future__ import annotations

from torch import Tensor, nn

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
    """

    decoder = "image"
    model: ImageStudent

    def table_parameters(self) -> list[nn.Parameter]:
        return list(self.model.encoding.parameters())

    def training_step(self, batch: ViewBatch, batch_idx: int) -> Tensor:
        pred = self.model(batch["c2w"], batch["K"], batch["centers"]).float()  # [B, h, w, 3]
        loss = masked_mse(pred, batch["rgb"], batch["mask"])
        self.log_loss(loss)
        return loss

    def validation_step(self, batch: ViewBatch, batch_idx: int) -> None:
        rgb = batch["rgb"]  # [1, H, W, 3]
        self.add_validation(self.model.render(batch["c2w"], batch["K"], rgb.shape[1], rgb.shape[2]), rgb)
