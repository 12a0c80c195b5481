"""Checks of an exported model against the PyTorch student: random rays (an image model: random poses),
full views, test-split PSNR."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.cameras import look_at
from core.io import sha256_file
from core.rays import generate_rays, generate_rays_from_pixels
from core.rig import rig_up, scene_center
from export.config import ExportConfig, Int8Config, ParityConfig
from export.image import ImageFile
from export.runtime import LightField, ModelMeta, scaled_intrinsics
from export.variants import variant_filename
from scenes.load import Scene, SceneSplit
from student.image_model import ImageStudent

log = logging.getLogger(__name__)
TIMING_SECONDS = 2.0  # repeat the frame timing while the samples so far took less than this

Camera = tuple[np.ndarray, np.ndarray]  # c2w [4, 4], K [3, 3] float32 (pixels of the rendered image)


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


def random_poses(
    c2w: Tensor,  # [C, 4, 4]
    n: int,
    generator: torch.Generator,
    jitter: float = 0.15,
) -> Tensor:  # [n, 4, 4]
    """Poses near random training cameras: each centre moved by ``jitter`` times its distance to the rig's
    centre, looking at a point near that centre (same up as the rig); unseen views of the scene.

    Args:
        c2w: ``[C, 4, 4]`` training poses.
        n: number of poses.
        generator: random source.
        jitter: displacement scale, relative to the camera distance.

    Returns:
        ``[n, 4, 4]`` float32 poses.
    """
    center, up = scene_center(c2w), rig_up(c2w).float()
    cam = torch.randint(0, c2w.shape[0], (n,), generator=generator)
    eye = c2w[cam, :3, 3].float()
    dist = (eye - center).norm(dim=-1, keepdim=True)
    eye = eye + jitter * dist * torch.randn(n, 3, generator=generator)
    target = center + 0.5 * jitter * dist * torch.randn(n, 3, generator=generator)
    return torch.cat([look_at(eye[i:i + 1], target[i], up) for i in range(n)])


@torch.inference_mode()
def torch_images(model: ImageStudent, cameras: list[Camera], size: tuple[int, int]) -> np.ndarray:
    """``[P, H, W, 3]`` PyTorch images of an image student, one per camera (``size = (H, W)``)."""
    return np.stack([model.render(torch.from_numpy(c2w)[None], torch.from_numpy(K)[None], *size)[0].numpy()
                     for c2w, K in cameras])


def evaluate_image_variant(path: Path, cameras: list[Camera], torch_ref: np.ndarray, n_random: int,
                           test_cameras: list[Camera], threads: int | None) -> dict[str, Any]:
    """Run one exported image-model file with the runtime (CPU) and compare it with PyTorch.

    Args:
        path: the ``.onnx`` file.
        cameras: the parity cameras: ``n_random`` random poses first, then training poses.
        torch_ref: ``[P, H, W, 3]`` PyTorch images of ``cameras``.
        n_random: how many of ``cameras`` are random poses.
        test_cameras: cameras of the test views to draw (none for an extra output size).
        threads: ONNX Runtime intra-op threads.

    Returns:
        ``file``, ``bytes``, ``sha256``, ``output_size``, ``max_abs_err_random`` (random poses),
        ``max_abs_err_view`` (training poses), ``psnr_vs_torch`` (all of them), ``ms_per_frame``, and the
        ONNX images ``images`` ``[P, H, W, 3]`` and ``views`` ``[V, H, W, 3]`` (for the caller's PSNRs).
    """
    field = LightField(path, providers=["CPUExecutionProvider"], threads=threads)
    images = np.stack([field.render(c2w, K) for c2w, K in cameras])
    err = np.abs(images - torch_ref).reshape(len(cameras), -1).max(axis=1)
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "output_size": list(field.view_size),
        "max_abs_err_random": float(err[:n_random].max(initial=0.0)),
        "max_abs_err_view": float(err[n_random:].max(initial=0.0)),
        "psnr_vs_torch": mean_view_psnr(images, torch_ref),
        "ms_per_frame": field.time_render(cameras[0][0], repeats=3),
        "images": images,
        "views": np.stack([field.render(c2w, K) for c2w, K in test_cameras]) if test_cameras else None,
    }


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
    start = time.perf_counter()
    rendered = [field(views[0][0].numpy(), views[0][1].numpy(), batch_size)]
    ms_samples = [time.perf_counter() - start]
    rendered += [field(vo.numpy(), vd.numpy(), batch_size) for vo, vd in views[1:]]
    rgb_views = np.stack(rendered)
    # the frame time: best of the first view's render and up to two more, while they take under
    # TIMING_SECONDS in all (a short frame is noisy on this machine; a frame of seconds is not)
    while len(ms_samples) < 3 and sum(ms_samples) < TIMING_SECONDS:
        start = time.perf_counter()
        field(views[0][0].numpy(), views[0][1].numpy(), batch_size)
        ms_samples.append(time.perf_counter() - start)
    ms = min(ms_samples) * 1e3
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


def n_test_views(cfg: ParityConfig, test: SceneSplit) -> int | None:
    """How many test views the report draws: ``max_test_views``, capped by ``max_test_rays`` (at least one;
    ``None``: all)."""
    n_views = cfg.max_test_views
    if cfg.max_test_rays is not None:
        by_rays = max(1, cfg.max_test_rays // (test.hw[0] * test.hw[1]))
        n_views = by_rays if n_views is None else min(n_views, by_rays)
    return n_views


def parity_cameras(train: SceneSplit, K: np.ndarray, n: int, gen: torch.Generator) -> list[Camera]:
    """The cameras an image model's files are checked on, at the training size: ``n`` random poses
    (:func:`random_poses`, intrinsics ``K [3, 3]``), then ``n`` training cameras spread over the split (all
    of them when it has fewer)."""
    picks = np.linspace(0, train.n_views - 1, min(n, train.n_views)).round().astype(int)
    cameras = [(c2w.numpy(), np.asarray(K, np.float32)) for c2w in random_poses(train.c2w, n, gen)]
    return cameras + [(train.c2w[i].numpy(), train.K[i].numpy()) for i in picks]


def image_report(cfg: ExportConfig, model: ImageStudent, meta: ModelMeta, scene: Scene,
                 files: list[ImageFile], gen: torch.Generator) -> dict[str, Any]:
    """Evaluate every image-model file against PyTorch on :func:`parity_cameras` (at the file's size), the
    training-size files against the test split's ground truth too, the reduced precisions against fp32 of
    their size (``psnr_vs_fp32``); then the int8 gate (:func:`int8_gate`).

    Returns:
        ``n_test_views``, ``torch`` (its test PSNR), ``parity`` (``ok`` when every fp32 file is within
        ``parity.fp32_tol`` of PyTorch), ``int8_gate``, ``output_sizes`` and ``variants`` (per file stem).
    """
    train, test = scene.split("train"), scene.split("test")
    hw = (int(train.hw[0]), int(train.hw[1]))
    base = parity_cameras(train, np.asarray(meta.K), cfg.parity.n_poses, gen)
    n_tests = min(n_test_views(cfg.parity, test) or test.n_views, test.n_views)
    tests: list[Camera] = [(test.c2w[i].numpy(), test.K[i].numpy()) for i in range(n_tests)]
    gt = test.rgb(meta.background)[:n_tests].numpy()
    torch_psnr = mean_view_psnr(torch_images(model, tests, hw), gt)
    sizes = list(dict.fromkeys(f.size for f in files))
    variants: dict[str, dict[str, Any]] = {}
    for size in sizes:
        cameras = [(c2w, scaled_intrinsics(K, hw, size)) for c2w, K in base]
        ref = torch_images(model, cameras, size)
        fp32: dict[str, Any] = {}
        for f in (f for f in files if f.size == size):  # fp32 first (write_image_variants)
            views = tests if size == hw else []
            res = evaluate_image_variant(f.path, cameras, ref, cfg.parity.n_poses, views, cfg.threads)
            fp32 = res if f.precision == "fp32" else fp32
            test_psnr = None if res["views"] is None else mean_view_psnr(res["views"], gt)
            res.update(precision=f.precision, test_psnr=test_psnr,
                       psnr_change_db=None if test_psnr is None else test_psnr - torch_psnr,
                       psnr_vs_fp32=None if res is fp32 else mean_view_psnr(res["images"], fp32["images"]))
            variants[f.path.stem] = res
            log.info("%s: max abs err %.2g, %.1f dB vs PyTorch", f.path.name,
                     max(res["max_abs_err_random"], res["max_abs_err_view"]), res["psnr_vs_torch"])
    err = max(max(r["max_abs_err_random"], r["max_abs_err_view"]) for r in variants.values()
              if r["precision"] == "fp32")
    parity = {"n_poses": len(base), "fp32_tol": cfg.parity.fp32_tol, "fp32_max_abs_err": err,
              "ok": err <= cfg.parity.fp32_tol}
    gate = int8_gate(cfg.int8, variants)
    for res in variants.values():
        del res["images"], res["views"]
    return {"n_test_views": n_tests, "torch": {"test_psnr": torch_psnr}, "parity": parity, "int8_gate": gate,
            "output_sizes": [list(s) for s in sizes], "variants": variants}


def int8_gate(cfg: Int8Config, variants: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Keep an image model's int8 files only when the training-size int8 file's test PSNR is at most
    ``cfg.max_psnr_drop_db`` below fp32's (an extra size's int8 file follows that verdict: those sizes have
    no ground truth); drops them from ``variants`` otherwise. ``None`` when no int8 file was made."""
    int8 = variants.get(Path(variant_filename("int8", False)).stem)
    if int8 is None:
        return None
    drop = variants[Path(variant_filename("fp32", False)).stem]["test_psnr"] - int8["test_psnr"]
    files = [stem for stem, res in variants.items() if res["precision"] == "int8"]
    published = drop <= cfg.max_psnr_drop_db
    if not published:
        log.warning("int8 files not published: test PSNR %.3f dB below fp32's (int8.max_psnr_drop_db=%g)",
                    drop, cfg.max_psnr_drop_db)
        for stem in files:
            del variants[stem]
    return {"max_psnr_drop_db": cfg.max_psnr_drop_db, "psnr_drop_db": drop, "published": published,
            "files": [f"{stem}.onnx" for stem in files]}
