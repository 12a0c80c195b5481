"""Normalized device coordinates (NDC) for forward-facing scenes, as NeRF and R2L use for LLFF captures.

A forward-facing capture has no empty surround: the scene runs from a little in front of the cameras to
infinity. NDC maps the frustum of a reference camera (the rig's average pose) to a box: a world point
at depth ``z`` in front of that camera goes to ``z' = 1 - 2 near / z``, in ``[-1, 1)`` from the near
plane to infinity, and lateral coordinates are divided by depth. Straight rays stay straight, samples
evenly spaced in NDC are evenly spaced in disparity, and the whole scene fits a bounded grid.

Everything here is in the OpenCV convention of :mod:`core.cameras` (the reference camera looks along
+Z), so NeRF's formula appears with its signs flipped (NeRF's cameras look along -Z).

A scene in NDC is a :class:`NDCSpace`; a model of such a scene takes **world** rays and converts them
itself (:func:`to_ndc`), so cameras, poses and rays elsewhere stay in the world frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from core.rays import generate_rays_from_pixels

MIN_DEPTH_DIR = 1e-4  # rays looking sideways or back from the reference camera are bent to this z slope


@dataclass
class NDCSpace:
    """The NDC frame of a forward-facing scene (plain numbers: it travels in checkpoints and metadata).

    Attributes:
        c2w: ``[4][4]`` reference camera-to-world pose (OpenCV), usually :func:`average_pose`.
        scale: ``[sx, sy]``: ``2 fx / W`` and ``2 fy / H`` of the reference camera (image edges at +-1).
        near: depth of the near plane in front of the reference camera (world units); content nearer
            than this is cut away.
    """

    c2w: list[list[float]]
    scale: list[float]
    near: float

    def to_dict(self) -> dict[str, object]:
        return {"c2w": [list(map(float, r)) for r in self.c2w], "scale": [float(s) for s in self.scale],
                "near": float(self.near)}

    @classmethod
    def from_dict(cls, d: dict) -> NDCSpace:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on a malformed record."""
        try:
            c2w = [[float(v) for v in row] for row in d["c2w"]]
            scale = [float(s) for s in d["scale"]]
            near = float(d["near"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("ndc record needs c2w (4x4), scale [sx, sy] and near") from None
        if len(c2w) != 4 or any(len(r) != 4 for r in c2w) or len(scale) != 2:
            raise ValueError("ndc record needs c2w (4x4), scale [sx, sy] and near")
        if not (near > 0 and min(scale) > 0):
            raise ValueError(f"ndc near and scale must be positive, got near={near}, scale={scale}")
        return cls(c2w=c2w, scale=scale, near=near)


def average_pose(c2w: Tensor) -> Tensor:
    """The mean pose of a rig (NeRF's ``poses_avg``), ``[C, 4, 4]`` -> ``[4, 4]`` (OpenCV).

    Centre: the mean camera centre; forward: the normalised mean viewing axis; down: the mean image-down
    axis made orthogonal to it.
    """
    c2w = c2w.double()
    forward = torch.nn.functional.normalize(c2w[:, :3, 2].mean(0), dim=0)
    down = c2w[:, :3, 1].mean(0)
    right = torch.nn.functional.normalize(torch.linalg.cross(down, forward), dim=0)
    down = torch.linalg.cross(forward, right)
    out = torch.eye(4, dtype=torch.float64)
    out[:3, 0], out[:3, 1], out[:3, 2], out[:3, 3] = right, down, forward, c2w[:, :3, 3].mean(0)
    return out.float()


def ndc_rays(
    rays_o: Tensor,  # [N, 3]
    rays_d: Tensor,  # [N, 3]
    c2w: Tensor,  # [4, 4]
    scale: Tensor,  # [2]
    near: float,
) -> tuple[Tensor, Tensor]:
    """World rays -> NDC rays of the reference camera ``c2w`` (closed form, OpenCV convention).

    The ray is first moved to start on the near plane (``z = near`` in the reference camera), then
    ``o' = (sx ox/oz, sy oy/oz, 1 - 2 near/oz)`` and
    ``d' = (sx (dx/dz - ox/oz), sy (dy/dz - oy/oz), 2 near/oz)``, so ``o' + t d'`` for ``t`` in
    ``[0, 1)`` covers the ray from the near plane to infinity.

    Args:
        rays_o: ``[N, 3]`` world origins.
        rays_d: ``[N, 3]`` world directions (any length).
        c2w: ``[4, 4]`` reference pose.
        scale: ``[2]`` ``(sx, sy)``.
        near: near-plane depth.

    Returns:
        ``o_ndc [N, 3]`` and ``d_ndc [N, 3]`` (not normalised: ``o + d`` is the point at infinity).
    """
    R, t = c2w[:3, :3], c2w[:3, 3]
    o = (rays_o - t) @ R  # world -> camera: R^T (x - t)
    d = rays_d @ R
    dz = d[:, 2:3]
    dz = torch.where(dz.abs() < MIN_DEPTH_DIR, torch.full_like(dz, MIN_DEPTH_DIR), dz)
    o = o + (near - o[:, 2:3]) / dz * d  # onto the near plane: o_z = near
    oz = o[:, 2:3]
    o_ndc = torch.cat([scale[0] * o[:, 0:1] / oz, scale[1] * o[:, 1:2] / oz, 1 - 2 * near / oz], -1)
    d_ndc = torch.cat([scale[0] * (d[:, 0:1] / dz - o[:, 0:1] / oz),
                       scale[1] * (d[:, 1:2] / dz - o[:, 1:2] / oz), 2 * near / oz], -1)
    return o_ndc, d_ndc


def to_ndc(rays_o: Tensor, rays_d: Tensor, space: NDCSpace) -> tuple[Tensor, Tensor]:
    """World rays ``[N, 3]`` -> NDC origins ``[N, 3]`` and **unit** NDC directions ``[N, 3]``.

    Distances along the returned rays are NDC lengths; the ray leaves the NDC box at ``z' = 1``.
    """
    c2w = torch.tensor(space.c2w, dtype=rays_o.dtype, device=rays_o.device)
    scale = torch.tensor(space.scale, dtype=rays_o.dtype, device=rays_o.device)
    o, d = ndc_rays(rays_o, rays_d, c2w, scale, space.near)
    return o, torch.nn.functional.normalize(d, dim=-1)


def ndc_points(
    x: Tensor,  # [N, 3]
    c2w: Tensor,  # [4, 4]
    scale: Tensor,  # [2]
    near: float,
) -> Tensor:
    """World points in front of the reference camera -> NDC points ``[N, 3]`` (tests, bounds)."""
    p = (x - c2w[:3, 3]) @ c2w[:3, :3]
    z = p[:, 2:3]
    return torch.cat([scale[0] * p[:, 0:1] / z, scale[1] * p[:, 1:2] / z, 1 - 2 * near / z], -1)


def ndc_box(space: NDCSpace, c2w: Tensor, K: Tensor, hw: tuple[int, int], margin: float = 0.25) -> Tensor:
    """``[6]`` NDC box holding every training ray from the near plane to infinity, grown by ``margin``.

    Args:
        space: the NDC frame.
        c2w: ``[C, 4, 4]`` training poses.
        K: ``[C, 3, 3]`` intrinsics.
        hw: image ``(H, W)``.
        margin: relative growth of the lateral extent (pseudo-views leave the training rays' range).

    Returns:
        ``[xmin, ymin, -1, xmax, ymax, 1]``.
    """
    H, W = hw
    u = torch.tensor([0.0, W, 0.0, W])
    v = torch.tensor([0.0, 0.0, H, H])
    ref, scale = torch.tensor(space.c2w), torch.tensor(space.scale)
    ends = []
    for pose, k in zip(c2w, K):
        o, d = generate_rays_from_pixels(pose, k, u, v)  # the image corners' rays
        o_n, d_n = ndc_rays(o, d, ref, scale, space.near)
        ends += [o_n[:, :2], (o_n + d_n)[:, :2]]
    xy = torch.cat(ends)
    lo, hi = xy.amin(0), xy.amax(0)
    pad = margin * (hi - lo) / 2
    lo, hi = lo - pad, hi + pad
    return torch.tensor([lo[0], lo[1], -1.0, hi[0], hi[1], 1.0])
