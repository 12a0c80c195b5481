"""Test evaluation of the student: chunked rendering, PSNR/SSIM, side-by-side images."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from core.datasets import SceneSplit
from core.io import atomic_write
from core.metrics import psnr, ssim
from core.rays import generate_rays
from student.model import R2LStudent

log = logging.getLogger(__name__)


@torch.inference_mode()
def render_rays(
    model: R2LStudent,
    rays_o: Tensor,  # [N, 3]
    rays_d: Tensor,  # [N, 3]
    chunk: int = 4096,
) -> Tensor:
    """Colors ``[N, 3]`` of any number of rays, ``chunk`` rays per forward pass (eval mode, fp32)."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(o, d) for o, d in zip(rays_o.split(chunk), rays_d.split(chunk))])
    model.train(was_training)
    return out.float().clamp(0, 1)


def render_views(model: R2LStudent, c2w: Tensor, K: Tensor, H: int, W: int, chunk: int = 4096) -> Tensor:
    """Render ``C`` views (``c2w [C, 4, 4]``, ``K [C, 3, 3]``) into ``[C, H, W, 3]``."""
    device = next(model.parameters()).device
    images = []
    for pose, intr in zip(c2w, K):
        rays_o, rays_d = generate_rays(pose.to(device), intr.to(device), H, W)
        images.append(render_rays(model, rays_o, rays_d, chunk).reshape(H, W, 3).cpu())
    return torch.stack(images)


def evaluate_split(model: R2LStudent, views: SceneSplit, background: list[float], chunk: int = 4096,
                   max_views: int | None = None) -> tuple[dict[str, float], Tensor, Tensor]:
    """PSNR/SSIM of the student on (the first ``max_views``) views of a split.

    Returns:
        ``({"psnr", "ssim", "n_views"}, predictions [C, H, W, 3], ground truth [C, H, W, 3])``.
    """
    n = min(views.n_views, max_views or views.n_views)
    H, W = views.hw
    gt = views.rgb(background)[:n]
    pred = render_views(model, views.c2w[:n], views.K[:n], H, W, chunk)
    psnrs = [psnr(p, g) for p, g in zip(pred, gt)]
    ssims = [ssim(p, g) for p, g in zip(pred, gt)]
    metrics = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "n_views": n}
    return metrics, pred, gt


def _index_of(name: str) -> int:
    digits = re.findall(r"\d+", name)
    return int(digits[-1]) if digits else -1


def find_teacher_renders(teacher_dir: Path, n_views: int, hw: tuple[int, int]) -> list[Path] | None:
    """The teacher's test predictions in ``<teacher_dir>/renders/``, one PNG per test view, in order.

    PNGs are ordered by the last number in their name; names containing ``test`` are preferred when
    present. Returns ``None`` unless there are at least ``n_views`` images of size ``hw``.
    """
    folder = teacher_dir / "renders"
    if not folder.is_dir():
        return None
    files = sorted(folder.glob("*.png"), key=lambda p: (_index_of(p.stem), p.name))
    if any("test" in p.name for p in files):
        files = [p for p in files if "test" in p.name]
    files = [p for p in files if "gt" not in p.stem.lower().split("_")]
    if len(files) < n_views:
        return None
    with Image.open(files[0]) as img:
        if (img.height, img.width) != tuple(hw):
            log.warning("teacher renders in %s are %dx%d, not %dx%d: not shown", folder, img.width,
                        img.height, hw[1], hw[0])
            return None
    return files[:n_views]


def _to_u8(img: Tensor | np.ndarray) -> np.ndarray:
    arr = img.numpy() if isinstance(img, Tensor) else img
    return (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_side_by_side(out_dir: Path, gt: Tensor, pred: Tensor, teacher_files: list[Path] | None,
                      max_images: int = 8) -> list[Path]:
    """Write ``gt | teacher | student`` (or ``gt | student``) PNGs for the first ``max_images`` views.

    Args:
        out_dir: folder of the PNGs (``test_000.png``, ...).
        gt: ``[C, H, W, 3]`` ground truth.
        pred: ``[C, H, W, 3]`` student predictions.
        teacher_files: teacher PNG per view, or ``None``.
        max_images: how many views to write.
    """
    paths = []
    for i in range(min(max_images, gt.shape[0])):
        panels = [_to_u8(gt[i])]
        if teacher_files is not None:
            with Image.open(teacher_files[i]) as img:
                panels.append(np.asarray(img.convert("RGB")))
        panels.append(_to_u8(pred[i]))
        image = Image.fromarray(np.concatenate(panels, axis=1))
        path = out_dir / f"test_{i:03d}.png"
        atomic_write(path, lambda p, im=image: im.save(p, format="PNG"))
        paths.append(path)
    return paths
