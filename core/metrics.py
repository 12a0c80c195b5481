"""Image metrics: PSNR and SSIM (SSIM from torchmetrics, the standard Gaussian-window version)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure


def mse_to_psnr(mse: Tensor | float) -> float:
    """PSNR in dB of a mean squared error for images in ``[0, 1]``."""
    mse_t = torch.as_tensor(mse, dtype=torch.float64).clamp_min(1e-12)
    return float(-10.0 * torch.log10(mse_t))


def psnr(pred: Tensor, target: Tensor) -> float:
    """PSNR in dB of ``pred`` against ``target`` (any equal shapes, values in ``[0, 1]``)."""
    return mse_to_psnr(torch.mean((pred.float() - target.float()) ** 2))


def ssim(pred: Tensor, target: Tensor) -> float:
    """SSIM of two ``[H, W, 3]`` (or ``[B, H, W, 3]``) images in ``[0, 1]`` (11x11 Gaussian window)."""
    p = pred.float().clamp(0, 1)
    t = target.float()
    if p.dim() == 3:
        p, t = p[None], t[None]
    value = structural_similarity_index_measure(
        p.permute(0, 3, 1, 2), t.permute(0, 3, 1, 2), data_range=1.0
    )
    return float(value)  # type: ignore[arg-type]
