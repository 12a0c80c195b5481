"""Checks of an exported model against the PyTorch student: random rays, full views, test-split PSNR."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.io import sha256_file
from core.rays import generate_rays, generate_rays_from_pixels
from export.runtime import LightField
from scenes.load import Scene, SceneSplit


def random_scene_rays(
    c2w: Tensor,  # [C, 4, 4]
    aabb: Tensor,  # [6]
    n: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Rays from random training-camera centres through uniform random points of the scene box.

    Args:
        c2w: ``[C, 4, 4]`` training poses.
        aabb: ``[6]`` scene box.
        n: number of rays.
        generator: random source.

    Returns:
        ``rays_o [n, 3]``, ``rays_d [n, 3]`` (unit) float32.
    """
    cam = torch.randint(0, c2w.shape[0], (n,), generator=generator)
    rays_o = c2w[cam, :3, 3].float()
    target = aabb[:3] + (aabb[3:] - aabb[:3]) * torch.rand(n, 3, generator=generator)
    rays_d = torch.nn.functional.normalize(target - rays_o, dim=-1)
    return rays_o.contiguous(), rays_d.contiguous()


def random_pixel_rays(
    c2w: Tensor,  # [C, 4, 4]
    K: Tensor,  # [C, 3, 3]
    hw: tuple[int, int],
    n: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Rays through uniform random points of random training images (a forward-facing scene's rays).

    Returns:
        ``rays_o [n, 3]``, ``rays_d [n, 3]`` (unit) float32.
    """
    cam = torch.randint(0, c2w.shape[0], (n,), generator=generator)
    H, W = hw
    u = torch.rand(n, generator=generator) * W
    v = torch.rand(n, generator=generator) * H
    rays_o, rays_d = generate_rays_from_pixels(c2w[cam].float(), K[cam].float(), u, v)
    return rays_o.contiguous(), rays_d.contiguous()


def scene_rays(scene: Scene, aabb: Tensor, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random rays of a scene's training rig: toward the box for an object, through the images for a
    forward-facing scene (whose box is in NDC)."""
    train = scene.split("train")
    if scene.ndc is not None:
        return random_pixel_rays(train.c2w, train.K, train.hw, n, generator)
    return random_scene_rays(train.c2w, aabb, n, generator)


@torch.inference_mode()
def torch_rgb(model: torch.nn.Module, rays_o: Tensor, rays_d: Tensor, chunk: int = 8192) -> Tensor:
    """``[N, 3]`` colors of the PyTorch student, evaluated in chunks (big temporaries page-fault here)."""
    starts = range(0, rays_o.shape[0], chunk)
    return torch.cat([model(rays_o[i:i + chunk], rays_d[i:i + chunk]) for i in starts])


def view_rays(split: SceneSplit, max_views: int | None = None) -> list[tuple[Tensor, Tensor]]:
    """Per view ``(rays_o [H*W, 3], rays_d [H*W, 3])`` of the first ``max_views`` views of ``split``."""
    H, W = split.hw
    n = split.n_views if max_views is None else min(max_views, split.n_views)
    return [generate_rays(split.c2w[i], split.K[i], H, W) for i in range(n)]


def psnr_np(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB of two arrays in ``[0, 1]`` (the formula of ``core.metrics.psnr``)."""
    mse = float(np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2))
    return -10.0 * math.log10(max(mse, 1e-12))


def mean_view_psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean over views of per-view PSNR (``[V, ...]`` arrays): the convention of the teacher's and the
    student's metrics, so the numbers in ``export.json`` compare with theirs."""
    return float(np.mean([psnr_np(p, t) for p, t in zip(pred, target)]))


def evaluate_variant(path: Path, views: list[tuple[Tensor, Tensor]], gt: np.ndarray, torch_views: np.ndarray,
                     random_rays: tuple[Tensor, Tensor], torch_random: np.ndarray, threads: int | None,
                     batch_size: int) -> dict[str, Any]:
    """Run one exported file with the runtime (CPU) and compare it with PyTorch and the ground truth.

    Args:
        path: the ``.onnx`` file.
        views: rays of the test views.
        gt: ``[V, H*W, 3]`` ground-truth colors of those views.
        torch_views: ``[V, H*W, 3]`` PyTorch student colors of those views.
        random_rays: random rays inside the scene.
        torch_random: ``[N, 3]`` PyTorch colors of ``random_rays``.
        threads: ONNX Runtime intra-op threads.
        batch_size: rays per call.

    Returns:
        ``bytes``, ``sha256``, ``max_abs_err_random``, ``max_abs_err_view`` (first test view),
        ``test_psnr`` (against ground truth), ``psnr_vs_torch``, ``ms_per_frame`` and the ONNX outputs
        ``views`` ``[V, H*W, 3]`` (for static-vs-dynamic comparisons).
    """
    field = LightField(path, providers=["CPUExecutionProvider"], threads=threads)
    o, d = (t.numpy() for t in random_rays)
    rgb_random = field(o, d, batch_size)
    rgb_views = np.stack([field(vo.numpy(), vd.numpy(), batch_size) for vo, vd in views])
    ms = float("inf")
    for _ in range(3):  # best of 3: one frame is short and this machine is noisy
        start = time.perf_counter()
        field(views[0][0].numpy(), views[0][1].numpy(), batch_size)
        ms = min(ms, (time.perf_counter() - start) * 1e3)
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "max_abs_err_random": float(np.abs(rgb_random - torch_random).max()),
        "max_abs_err_view": float(np.abs(rgb_views[0] - torch_views[0]).max()),
        "test_psnr": mean_view_psnr(rgb_views, gt),
        "psnr_vs_torch": mean_view_psnr(rgb_views, torch_views),
        "ms_per_frame": ms,
        "views": rgb_views,
    }
