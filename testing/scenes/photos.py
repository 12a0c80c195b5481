"""A procedural object with enough texture for SIFT, photographed from known poses (the COLMAP checks).

A sphere and an off-centre box colored by :func:`testing.scenes.textures.marble` (no repeating pattern,
so features match unambiguously), lit by a fixed light, on a plain grey background, seen from random
upper-hemisphere cameras looking at the origin (:func:`testing.scenes.rigs.photo_poses`).
:func:`write_photos` writes RGB photos and their masks (255 = object) the way a user hands them to
``python -m scenes.colmap``; the true poses come back for comparison, and :func:`write_true_scene` writes
the same photos with the true poses as a ``transforms.json`` scene. :func:`align_similarity` is the Umeyama
alignment used to compare a reconstruction with the truth (a reconstruction is only defined up to a
similarity).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.cameras import focal_from_fov, intrinsics_matrix, opengl_to_opencv
from core.io import write_json
from testing.scenes import textures
from testing.scenes.raycast import Box, Scene, Sphere, Surface, render, to_uint8
from testing.scenes.rigs import FOV_X, photo_poses

BACKGROUND = 0.5
MARBLE = Scene((Surface(Box((0.05, -0.95, -0.7), (1.0, 0.05, 0.3)), textures.marble, lit=(0.35, 0.65)),
                Surface(Sphere((-0.45, 0.4, 0.0), 0.65), textures.marble, lit=(0.35, 0.65))),
               light=tuple(np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])),
               background=(BACKGROUND,) * 3)


def intrinsics(size: int) -> torch.Tensor:
    """``[3, 3]`` pinhole intrinsics of a ``size x size`` photo."""
    focal = focal_from_fov(FOV_X, size)
    return intrinsics_matrix(focal, focal, size / 2, size / 2)


def render_photo(c2w: torch.Tensor, K: torch.Tensor, size: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB ``[size, size, 3]`` uint8 photo on grey and its mask ``[size, size]`` (255 = object)."""
    frame = render(MARBLE, c2w, K, size, size)
    return to_uint8(frame.rgb), to_uint8(frame.alpha)


def write_photos(root: Path, n_views: int, size: int, seed: int = 0,
                 masks: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Write ``root/images/r_XXX.png`` (and ``root/masks/r_XXX.png``); return poses, ``K`` and names.

    Returns:
        ``c2w [n_views, 4, 4]`` true OpenCV poses, ``K [3, 3]``, and the photo names, in order.
    """
    poses, K = photo_poses(n_views, seed), intrinsics(size)
    (root / "images").mkdir(parents=True, exist_ok=True)
    if masks:
        (root / "masks").mkdir(parents=True, exist_ok=True)
    names = []
    for i, c2w in enumerate(poses):
        rgb, mask = render_photo(c2w, K, size)
        name = f"r_{i:03d}.png"
        Image.fromarray(rgb, "RGB").save(root / "images" / name)
        if masks:
            Image.fromarray(mask, "L").save(root / "masks" / name)
        names.append(name)
    return poses, K, names


def write_true_scene(root: Path, photos: Path, masks: Path | None, c2w: torch.Tensor, K: torch.Tensor,
                     names: list[str], size: int) -> Path:
    """A ``transforms.json`` scene in ``root``: the photos (relative paths) with their true poses."""
    root.mkdir(parents=True, exist_ok=True)
    frames = []
    for name, pose in zip(names, c2w):
        frame = {"file_path": _relative(photos / name, root),
                 "transform_matrix": opengl_to_opencv(pose.double()).tolist()}  # the flip is its own inverse
        if masks is not None:
            frame["mask_path"] = _relative(masks / name, root)
        frames.append(frame)
    meta = {"fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
            "w": size, "h": size, "frames": frames}
    return write_json(root / "transforms.json", meta)


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


def align_similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Umeyama: the similarity ``x -> s R x + t`` that best maps points ``src [N, 3]`` onto ``dst [N, 3]``.

    Returns:
        ``src`` mapped ``[N, 3]``, the scale ``s``, the rotation ``R [3, 3]`` and the translation ``t [3]``.
    """
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1.0
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / xs.var(0).sum())
    t = mu_d - s * R @ mu_s
    return src @ (s * R).T + t, s, R, t
