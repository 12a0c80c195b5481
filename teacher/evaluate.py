"""Evaluation of a teacher on a split: PSNR/SSIM at full resolution and side-by-side renders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from core.io import atomic_write
from core.metrics import psnr, ssim
from core.rays import generate_rays
from scenes.load import SceneSplit
from teacher.protocol import RayRenderer

log = logging.getLogger(__name__)

ERROR_GAIN = 4.0  # error maps show |pred - gt| x this, so small errors stay visible


def render_view(teacher: RayRenderer, c2w: Tensor, K: Tensor, H: int, W: int, background: Tensor,
                chunk: int) -> Tensor:
    """``[H, W, 3]`` image of one camera (``c2w [4, 4]``, ``K [3, 3]``)."""
    rays_o, rays_d = generate_rays(c2w, K, H, W)
    return teacher.render_rays(rays_o, rays_d, background, chunk=chunk)["rgb"].reshape(H, W, 3)


def save_comparison(path: Path, gt: Tensor, pred: Tensor) -> None:
    """Write ``gt | pred | error`` side by side as an 8-bit PNG (images ``[H, W, 3]`` in ``[0, 1]``)."""
    err = ((pred - gt).abs().mean(-1, keepdim=True) * ERROR_GAIN).expand_as(gt)
    row = torch.cat([gt, pred, err], dim=1).clamp(0, 1)
    pixels = (row.cpu().numpy() * 255 + 0.5).astype(np.uint8)
    atomic_write(path, lambda p: Image.fromarray(pixels, "RGB").save(p, format="PNG"))


@torch.inference_mode()
def evaluate(teacher: RayRenderer, split: SceneSplit, background: list[float], chunk: int = 4096,
             n_renders: int = 3, render_dir: Path | None = None, progress: bool = True) -> dict[str, float]:
    """Render every view of ``split`` on ``background`` and score it.

    Returns:
        ``{"psnr", "ssim", "n_views"}`` (means over views).
    """
    teacher.eval()
    bg = torch.tensor(background, dtype=torch.float32, device=teacher.aabb.device)
    gts = split.rgb(background)
    H, W = split.hw
    keep = set(np.linspace(0, split.n_views - 1, n_renders).round().astype(int).tolist() if n_renders else [])
    psnrs, ssims = [], []
    for i in tqdm(range(split.n_views), desc="evaluate", disable=not progress, leave=False):
        c2w, K = split.c2w[i].to(bg.device), split.K[i].to(bg.device)
        pred = render_view(teacher, c2w, K, H, W, bg, chunk).cpu()
        psnrs.append(psnr(pred, gts[i]))
        ssims.append(ssim(pred, gts[i]))
        if render_dir is not None and i in keep:
            save_comparison(render_dir / f"{Path(split.files[i]).stem}.png", gts[i], pred)
    result = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "n_views": split.n_views}
    log.info("test PSNR %.2f dB, SSIM %.4f over %d views", result["psnr"], result["ssim"], split.n_views)
    return result
