"""Test evaluation of the student (either decoder): rendering, PSNR/SSIM, side-by-side images, frame cost."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from core.io import atomic_write
from core.metrics import psnr, ssim
from core.rays import generate_rays
from scenes.load import SceneSplit
from student.checkpoint import Student
from student.image_model import ImageStudent
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


@torch.inference_mode()
def render_image(model: ImageStudent, c2w: Tensor, K: Tensor, H: int, W: int) -> Tensor:
    """One whole view ``[H, W, 3]`` of an image student (``c2w [4, 4]``, ``K [3, 3]``; eval mode, fp32)."""
    was_training = model.training
    model.eval()
    out = model.render(c2w[None], K[None], H, W)[0]
    model.train(was_training)
    return out.float().clamp(0, 1)


def render_views(model: Student, c2w: Tensor, K: Tensor, H: int, W: int, chunk: int = 4096) -> Tensor:
    """Render ``C`` views (``c2w [C, 4, 4]``, ``K [C, 3, 3]``) into ``[C, H, W, 3]`` (a ray student in
    chunks of ``chunk`` rays, an image student a whole view at a time)."""
    device = next(model.parameters()).device
    images = []
    for pose, intr in zip(c2w, K):
        pose, intr = pose.to(device), intr.to(device)
        if isinstance(model, ImageStudent):
            images.append(render_image(model, pose, intr, H, W).cpu())
            continue
        rays_o, rays_d = generate_rays(pose, intr, H, W)
        images.append(render_rays(model, rays_o, rays_d, chunk).reshape(H, W, 3).cpu())
    return torch.stack(images)


def image_frame_cost(model: ImageStudent, H: int, W: int) -> dict[str, Any]:
    """What one ``H x W`` frame of an image student costs (its ``metrics.json`` keys).

    FLOPs are counted on a traced forward (2 per multiply-add of every convolution and linear layer, the
    dropped blocks past the edges included; plane lookups, activations and biases not counted), so they
    follow the network whatever its layers are.

    Returns:
        ``{"frame_size": [H, W], "flops_per_frame", "rays_per_frame", "plane_lookups_per_frame"}``: rays
        are the blocks of the ray map, lookups the bilinear plane reads (3 planes a point, level and ray).
    """
    flops = 0

    def count(module: nn.Module, inputs: Any, output: Tensor) -> None:
        nonlocal flops
        flops += 2 * output.numel() * module.weight[0].numel()  # type: ignore[index]

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    hooks = [m.register_forward_hook(count) for m in layers]
    try:
        c2w = torch.eye(4)
        c2w[2, 3] = -4.0  # any camera: the cost does not depend on it
        K = torch.tensor([[float(W), 0.0, W / 2], [0.0, float(W), H / 2], [0.0, 0.0, 1.0]])
        device = next(model.parameters()).device
        render_image(model, c2w.to(device), K.to(device), H, W)
    finally:
        for hook in hooks:
            hook.remove()
    h, w = model.blocks(H, W)
    cfg = model.cfg
    return {"frame_size": [H, W], "flops_per_frame": flops, "rays_per_frame": h * w,
            "plane_lookups_per_frame": 3 * h * w * cfg.n_points * len(cfg.resolutions)}


def evaluate_split(model: Student, views: SceneSplit, background: list[float], chunk: int = 4096,
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


def teacher_test_predictions(
    teacher_dir: Path, files: list[str], hw: tuple[int, int]
) -> dict[int, np.ndarray]:
    """The teacher's test predictions that ``<teacher_dir>/renders/`` holds, by test-view index.

    The teacher writes ``<stem of the test image>.png`` as ``ground truth | prediction | error`` for a few
    views; the middle panel is taken (an image of width ``W`` is taken whole).

    Args:
        teacher_dir: ``<run_dir>/teacher``.
        files: image file of each test view (``SceneSplit.files``).
        hw: ``(H, W)`` of the test views.

    Returns:
        ``{view index: uint8 [H, W, 3]}``; empty when there are no usable renders.
    """
    folder = teacher_dir / "renders"
    by_stem = {Path(f).stem: i for i, f in enumerate(files)}
    H, W = hw
    found: dict[int, np.ndarray] = {}
    for path in sorted(folder.glob("*.png")) if folder.is_dir() else []:
        if path.stem not in by_stem:
            continue
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
        if arr.shape[0] == H and arr.shape[1] in (W, 3 * W):
            found[by_stem[path.stem]] = arr[:, W:2 * W] if arr.shape[1] == 3 * W else arr
        else:
            log.warning("%s: %s is not a %dx%d test render; not shown", path, arr.shape[:2], H, W)
    return found


def _to_u8(img: Tensor | np.ndarray) -> np.ndarray:
    arr = img.numpy() if isinstance(img, Tensor) else img
    return (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_side_by_side(out_dir: Path, gt: Tensor, pred: Tensor, teacher: dict[int, np.ndarray],
                      n_default: int = 4) -> list[Path]:
    """Write ``gt | teacher | student`` PNGs for the views the teacher rendered (else ``gt | student``).

    Args:
        out_dir: folder of the PNGs (``test_<view>.png``).
        gt: ``[C, H, W, 3]`` ground truth.
        pred: ``[C, H, W, 3]`` student predictions.
        teacher: teacher predictions by view index (see :func:`teacher_test_predictions`).
        n_default: views (evenly spaced) written when there are no teacher predictions.
    """
    n = gt.shape[0]
    spaced = sorted({int(i) for i in np.linspace(0, n - 1, n_default).round()})
    views = sorted(i for i in teacher if i < n) or spaced
    paths = []
    for i in views:
        panels = [_to_u8(gt[i])] + ([teacher[i]] if i in teacher else []) + [_to_u8(pred[i])]
        image = Image.fromarray(np.concatenate(panels, axis=1))
        path = out_dir / f"test_{i:03d}.png"
        atomic_write(path, lambda p, im=image: im.save(p, format="PNG"))  # type: ignore[misc]
        paths.append(path)
    return paths
