"""Cameras and rays for the runtime: pixel rays of a view, the content box and empty-space tests, and the
checks of a pose and of intrinsics (numpy only, the same math and messages as ``core.cameras`` and
``core.rays``; OpenCV convention: +X right, +Y down, looking along +Z, pixel centres at ``+0.5``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .meta import ModelError

# largest rigidity_error a pose may have (files store rounded matrices): core.cameras.RIGIDITY_TOLERANCE
RIGIDITY_TOLERANCE = 1e-2


def rays_from_camera(
    c2w: np.ndarray,  # [4, 4] or [3, 4]
    K: np.ndarray,  # [3, 3]
    H: int,
    W: int,
) -> tuple[np.ndarray, np.ndarray]:
    """All rays of one ``H x W`` image through pixel centres, row-major (same math as ``core.rays``).

    Args:
        c2w: ``[4, 4]`` (or ``[3, 4]``) camera-to-world pose, OpenCV convention.
        K: ``[3, 3]`` intrinsics in pixels.
        H: image height.
        W: image width.

    Returns:
        ``rays_o [H*W, 3]`` and ``rays_d [H*W, 3]`` (unit length), float32.
    """
    c2w = np.asarray(c2w, dtype=np.float32)
    K = np.asarray(K, dtype=np.float32)
    v, u = np.meshgrid(np.arange(H, dtype=np.float32) + 0.5, np.arange(W, dtype=np.float32) + 0.5,
                       indexing="ij")
    x = (u.reshape(-1) - K[0, 2]) / K[0, 0]
    y = (v.reshape(-1) - K[1, 2]) / K[1, 1]
    dirs_cam = np.stack([x, y, np.ones_like(x)], axis=-1)  # [H*W, 3]
    rays_d = dirs_cam @ c2w[:3, :3].T
    rays_d /= np.maximum(np.linalg.norm(rays_d, axis=-1, keepdims=True), 1e-12)
    rays_o = np.broadcast_to(c2w[:3, 3], rays_d.shape)
    return np.ascontiguousarray(rays_o, dtype=np.float32), np.ascontiguousarray(rays_d, dtype=np.float32)


def rays_meet_box(
    rays_o: np.ndarray,  # [N, 3]
    rays_d: np.ndarray,  # [N, 3]
    box: Sequence[float],  # [6]
    near: float,
    far: float,
    margin: float = 1e-4,
) -> np.ndarray:
    """Which rays may meet ``box`` within ``[near, far]``: the graph's own hit test, slightly widened.

    Same slab method as ``core.rays.ray_aabb_intersect`` (which the exported graph runs), but a ray counts
    as meeting the box while its exit distance is within ``margin * (1 + |t|)`` of its entry, so a
    grazing ray that float rounding might tip either way is left to the graph. Every ray this rejects,
    the graph would give the background, so skipping them changes no output.

    Args:
        rays_o: ``[N, 3]`` origins.
        rays_d: ``[N, 3]`` unit directions.
        box: ``[6]`` box (min xyz, max xyz).
        near: start of the ray range.
        far: end of the ray range.
        margin: relative widening of the test.

    Returns:
        ``[N]`` bool.
    """
    lo, hi = np.asarray(box[:3], np.float32), np.asarray(box[3:], np.float32)
    d = np.where(np.abs(rays_d) < 1e-12, np.float32(1e-12), rays_d)
    inv_d = np.float32(1.0) / d
    t0, t1 = (lo - rays_o) * inv_d, (hi - rays_o) * inv_d
    t_in = np.maximum(np.minimum(t0, t1).max(axis=-1), near)
    t_out = np.minimum(np.maximum(t0, t1).min(axis=-1), far)
    return t_in < t_out + margin * (1.0 + np.abs(t_out))


def rays_cross_cells(
    rays_o: np.ndarray,  # [N, 3]
    rays_d: np.ndarray,  # [N, 3]
    box: Sequence[float],  # [6]
    near: float,
    far: float,
    n_points: int,
    cells: np.ndarray,  # [G, G, G] bool
    margin: float = 1e-3,
    chunk: int = 8192,
) -> np.ndarray:
    """Which rays may have a bin-centre point in a set cell: the graph's empty-space test, slightly widened.

    The student's K points are the bin centres ``(k + 1/2) / K`` of the part of ``[near, far]`` inside
    ``box``; a ray shows only the background when none of them lies in a set cell. Here a point counts
    as in a set cell when one within ``margin`` cells of it is, so that float rounding never makes this
    reject a ray the graph would evaluate (skipping only rays the graph gives the background).

    Args:
        rays_o: ``[N, 3]`` origins.
        rays_d: ``[N, 3]`` unit directions.
        box: ``[6]`` content box of the grid.
        near: start of the ray range.
        far: end of the ray range.
        n_points: ``K``.
        cells: ``[G, G, G]`` bool grid over ``box``, x-major.
        margin: widening, in cells.
        chunk: rays per step (bounds the temporaries).

    Returns:
        ``[N]`` bool.
    """
    G = cells.shape[0]
    flat = cells.reshape(-1)
    lo, hi = np.asarray(box[:3], np.float64), np.asarray(box[3:], np.float64)
    frac = (np.arange(n_points) + 0.5) / n_points  # [K]
    out = np.zeros(rays_o.shape[0], dtype=bool)
    for s in range(0, rays_o.shape[0], chunk):
        o, d = rays_o[s:s + chunk].astype(np.float64), rays_d[s:s + chunk].astype(np.float64)
        d = np.where(np.abs(d) < 1e-12, 1e-12, d)
        t0, t1 = (lo - o) / d, (hi - o) / d
        t_in = np.clip(np.maximum(np.minimum(t0, t1).max(-1), near), near, far)
        t_out = np.clip(np.minimum(np.maximum(t0, t1).min(-1), far), near, far)
        t = t_in[:, None] + frac[None] * np.maximum(t_out - t_in, 0.0)[:, None]  # [n, K]
        q = (o[:, None] + t[..., None] * d[:, None] - lo) / (hi - lo) * G  # [n, K, 3] in cells
        ijk = [np.clip(np.floor(q + e), 0, G - 1).astype(np.int64) for e in (-margin, margin)]
        hit = np.zeros(o.shape[0], dtype=bool)
        for cx in ijk:
            for cy in ijk:
                for cz in ijk:
                    hit |= flat[(cx[..., 0] * G + cy[..., 1]) * G + cz[..., 2]].any(-1)
        out[s:s + chunk] = hit
    return out


def rigidity_error(c2w: np.ndarray) -> float:
    """Largest deviation of a ``[4, 4]`` pose from a rigid transform (0 for a perfect one): of ``R^T R``
    from the identity, of ``det R`` from 1, of the last row from ``0 0 0 1`` (``core.cameras``'s twin)."""
    m = np.asarray(c2w, dtype=np.float64)
    R = m[:3, :3]
    return float(max(np.abs(R.T @ R - np.eye(3)).max(), abs(np.linalg.det(R) - 1.0),
                     np.abs(m[3] - [0.0, 0.0, 0.0, 1.0]).max()))


def check_pose(c2w: Any, source: str = "pose") -> np.ndarray:
    """The runtime's one pose check, the torch-free twin of ``core.cameras.check_c2w`` (same rules, same
    messages; ``tests/test_runtime.py`` runs both over ``tests/pose_cases.py``): a 4x4 or 3x4 matrix of
    finite numbers whose rotation is orthonormal with determinant +1 and whose last row is ``0 0 0 1``,
    both within :data:`RIGIDITY_TOLERANCE`.

    Args:
        c2w: ``[4, 4]`` or ``[3, 4]`` camera-to-world pose, OpenCV convention (nested lists or an array).
        source: what the pose is, the start of the message (``"poses.json: pose 3"``).

    Returns:
        ``[4, 4]`` float32 pose (a 3x4 gains the row ``0 0 0 1``).

    Raises:
        ModelError: one line, ``"<source> <problem>"``.
    """
    try:
        m = np.asarray(c2w, dtype=np.float64)
    except (TypeError, ValueError):  # ragged lists, text, objects
        raise ModelError(f"{source} is not a 4x4 (or 3x4) matrix of numbers") from None
    if m.shape == (3, 4):
        m = np.concatenate([m, [[0.0, 0.0, 0.0, 1.0]]])
    if m.shape != (4, 4):
        raise ModelError(f"{source} must be 4x4 (or 3x4), got shape {list(m.shape)}")
    if not np.isfinite(m).all():
        raise ModelError(f"{source} is not finite")
    if np.abs(m[3] - [0.0, 0.0, 0.0, 1.0]).max() > RIGIDITY_TOLERANCE:
        raise ModelError(f"{source} is not rigid (last row {' '.join(f'{v:g}' for v in m[3])}, need 0 0 0 1)")
    err = rigidity_error(m)
    if err > RIGIDITY_TOLERANCE:
        raise ModelError(f"{source} is not rigid (rotation not orthonormal with determinant +1; "
                         f"error {err:.3g})")
    return m.astype(np.float32)


def check_intrinsics(K: Any, source: str = "intrinsics K") -> np.ndarray:
    """The runtime's intrinsics check: a 3x3 matrix of finite numbers with positive focal lengths.

    Args:
        K: ``[3, 3]`` pinhole matrix in pixels (nested lists or an array).
        source: what the matrix is, the start of the message.

    Returns:
        ``[3, 3]`` float32.

    Raises:
        ModelError: one line, ``"<source> <problem>"``.
    """
    try:
        m = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelError(f"{source} is not a 3x3 matrix of numbers") from None
    if m.shape != (3, 3):
        raise ModelError(f"{source} must be 3x3, got shape {list(m.shape)}")
    if not np.isfinite(m).all():
        raise ModelError(f"{source} is not finite")
    if not (m[0, 0] > 0 and m[1, 1] > 0):
        raise ModelError(f"{source} needs positive focal lengths, got fx={m[0, 0]:g}, fy={m[1, 1]:g}")
    return m.astype(np.float32)


def scaled_intrinsics(
    K: np.ndarray,  # [3, 3]
    hw: Sequence[int],
    size: Sequence[int],
) -> np.ndarray:  # [3, 3]
    """``K`` of ``hw = (H, W)`` images scaled to ``size = (H', W')`` images of the same field of view (rows
    0 and 1 by ``W'/W`` and ``H'/H``: pixel coordinates scale with the image), float32."""
    out = np.asarray(K, dtype=np.float32).copy()
    out[0] *= size[1] / hw[1]
    out[1] *= size[0] / hw[0]
    return out
