"""A procedural object with enough texture for SIFT, photographed from known poses (COLMAP checks).

A sphere and an off-centre box coloured by multi-octave 3D value noise (no repeating pattern, so
features match unambiguously), lit by a fixed light, on a plain grey background, seen from random
upper-hemisphere cameras looking at the origin. :func:`write_photos` writes RGB photos and their
masks (255 = object) the way a user would hand them to ``python -m scenes.colmap``; the true poses
come back for comparison, and :func:`write_true_scene` writes the same photos with the true poses as
a ``transforms.json`` scene. :func:`align_similarity` is the Umeyama alignment used to compare a
reconstruction with the truth (a reconstruction is only defined up to a similarity).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.cameras import focal_from_fov, intrinsics_matrix, look_at, opengl_to_opencv
from core.io import write_json
from core.rays import generate_rays

FOV_X = 0.69  # radians, NeRF synthetic's field of view
RADIUS = 4.0  # camera distance from the origin
BOX = (np.array([0.05, -0.95, -0.7]), np.array([1.0, 0.05, 0.3]))
SPHERE_CENTRE, SPHERE_RADIUS = np.array([-0.45, 0.4, 0.0]), 0.65
LIGHT = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
BACKGROUND = 0.5
_TABLE = np.random.default_rng(7).random((3, 1 << 16))  # lattice values of the noise, per color channel


def camera_poses(n: int, seed: int = 0) -> torch.Tensor:
    """``[n, 4, 4]`` OpenCV poses at ``RADIUS`` from the origin, looking at it; elevations 6-75 deg, +Z up."""
    rng = np.random.default_rng(seed)
    az = rng.uniform(0, 2 * math.pi, n)
    el = rng.uniform(0.1, 1.3, n)
    eye = RADIUS * np.stack([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)], -1)
    return look_at(torch.from_numpy(eye).float(), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))


def intrinsics(size: int) -> torch.Tensor:
    """``[3, 3]`` pinhole intrinsics of a ``size x size`` photo."""
    focal = focal_from_fov(FOV_X, size)
    return intrinsics_matrix(focal, focal, size / 2, size / 2)


def _value_noise(p: np.ndarray, freq: float) -> np.ndarray:
    """``[..., 3]`` smooth noise in ``[0, 1]`` of points ``p [..., 3]`` (trilinear over a hashed lattice)."""
    q = p * freq
    i0 = np.floor(q).astype(np.int64)
    f = q - i0
    f = f * f * (3 - 2 * f)  # smoothstep: no visible lattice creases
    out = np.zeros(p.shape[:-1] + (3,))
    for corner in range(8):
        o = np.array([(corner >> 0) & 1, (corner >> 1) & 1, (corner >> 2) & 1])
        idx = i0 + o
        h = (idx[..., 0] * 73856093) ^ (idx[..., 1] * 19349663) ^ (idx[..., 2] * 83492791)
        w = np.prod(np.where(o > 0, f, 1 - f), axis=-1)
        out += w[..., None] * _TABLE[:, h & 0xFFFF].transpose(*range(1, h.ndim + 1), 0)
    return out


def albedo(points: np.ndarray) -> np.ndarray:
    """``[..., 3]`` surface colour at ``points [..., 3]``: marble-like bands of multi-octave noise.

    The bands (a sine of the noise) give sharp, irregular edges at every scale, which SIFT needs;
    plain smooth noise gave ~200 features per 400 px photo.
    """
    weights = [0.6**k for k in range(5)]
    n = sum(w * _value_noise(points, 2.0 ** (k + 1)) for k, w in enumerate(weights)) / sum(weights)
    bands = 0.5 + 0.5 * np.sin(2 * math.pi * 4.0 * n)
    luminance = bands[..., :1]
    return np.clip(0.1 + 0.8 * (0.6 * luminance + 0.4 * bands), 0.0, 1.0)


def render(c2w: torch.Tensor, K: torch.Tensor, size: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB ``[size, size, 3]`` uint8 photo on grey and its mask ``[size, size]`` (255 = object)."""
    rays_o, rays_d = generate_rays(c2w, K, size, size)
    o = rays_o.double().numpy().reshape(size, size, 3)
    d = rays_d.double().numpy().reshape(size, size, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (BOX[0] - o) / d, (BOX[1] - o) / d
    t_box = np.minimum(t0, t1).max(-1)
    hit_box = (t_box < np.maximum(t0, t1).min(-1)) & (t_box > 0)
    oc = o - SPHERE_CENTRE
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - SPHERE_RADIUS**2)
    t_sph = -b - np.sqrt(np.clip(disc, 0, None))
    hit_sph = (disc > 0) & (t_sph > 0) & ((t_sph < t_box) | ~hit_box)
    t = np.where(hit_sph, t_sph, t_box)
    points = o + np.nan_to_num(t, posinf=0.0)[..., None] * d
    # box normal: the axis of the face hit (the coordinate closest to a face plane)
    gap = np.minimum(np.abs(points - BOX[0]), np.abs(points - BOX[1]))
    axis = gap.argmin(-1)
    sign = np.where(np.abs(points - BOX[0]) < np.abs(points - BOX[1]), -1.0, 1.0)
    box_normal = np.eye(3)[axis] * np.take_along_axis(sign, axis[..., None], -1)
    normal = np.where(hit_sph[..., None], (points - SPHERE_CENTRE) / SPHERE_RADIUS, box_normal)
    shade = 0.35 + 0.65 * np.clip(normal @ LIGHT, 0, 1)[..., None]
    hit = hit_box | hit_sph
    rgb = np.full((size, size, 3), BACKGROUND)
    rgb[hit] = albedo(points[hit]) * shade[hit]
    return (rgb * 255 + 0.5).astype(np.uint8), (hit * 255).astype(np.uint8)


def write_photos(root: Path, n_views: int, size: int, seed: int = 0,
                 masks: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Write ``root/images/r_XXX.png`` (and ``root/masks/r_XXX.png``); return poses, ``K`` and names.

    Returns:
        ``c2w [n_views, 4, 4]`` true OpenCV poses, ``K [3, 3]``, and the photo names, in order.
    """
    poses, K = camera_poses(n_views, seed), intrinsics(size)
    (root / "images").mkdir(parents=True, exist_ok=True)
    if masks:
        (root / "masks").mkdir(parents=True, exist_ok=True)
    names = []
    for i, c2w in enumerate(poses):
        rgb, mask = render(c2w, K, size)
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
