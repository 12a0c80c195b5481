"""Ray generation and ray/box intersection (pure functions, OpenCV convention of ``core.cameras``)."""

from __future__ import annotations

import torch
from torch import Tensor


def pixel_centers(H: int, W: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates ``u`` (column) and ``v`` (row), each ``[H, W]``, offset by 0.5."""
    v, u = torch.meshgrid(
        torch.arange(H, device=device, dtype=torch.float32) + 0.5,
        torch.arange(W, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    return u, v


def generate_rays_from_pixels(
    c2w: Tensor,  # [N, 4, 4] or [4, 4]
    K: Tensor,  # [N, 3, 3] or [3, 3]
    u: Tensor,  # [N]
    v: Tensor,  # [N]
) -> tuple[Tensor, Tensor]:
    """Rays through image points ``(u, v)`` (pixel units; centres are at ``+0.5``).

    Args:
        c2w: ``[N, 4, 4]`` per-ray poses, or one ``[4, 4]`` pose for all.
        K: ``[N, 3, 3]`` per-ray intrinsics, or one ``[3, 3]``.
        u: ``[N]`` horizontal image coordinates.
        v: ``[N]`` vertical image coordinates.

    Returns:
        ``rays_o [N, 3]`` camera centres and ``rays_d [N, 3]`` unit directions, world frame.
    """
    x = (u - K[..., 0, 2]) / K[..., 0, 0]
    y = (v - K[..., 1, 2]) / K[..., 1, 1]
    dirs_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # [N, 3]
    R = c2w[..., :3, :3]
    if R.dim() == 2:
        rays_d = dirs_cam @ R.T
        rays_o = c2w[:3, 3].expand_as(rays_d)
    else:
        rays_d = torch.einsum("nij,nj->ni", R, dirs_cam)
        rays_o = c2w[:, :3, 3]
    return rays_o.contiguous(), torch.nn.functional.normalize(rays_d, dim=-1)


def generate_rays(c2w: Tensor, K: Tensor, H: int, W: int) -> tuple[Tensor, Tensor]:
    """All rays of one ``H x W`` image, through pixel centres, in row-major order.

    Args:
        c2w: ``[4, 4]`` camera-to-world pose.
        K: ``[3, 3]`` intrinsics in pixels.
        H: image height.
        W: image width.

    Returns:
        ``rays_o [H*W, 3]``, ``rays_d [H*W, 3]`` (unit length).
    """
    u, v = pixel_centers(H, W, device=c2w.device)
    return generate_rays_from_pixels(c2w, K, u.reshape(-1), v.reshape(-1))


def ray_aabb_intersect(
    rays_o: Tensor,  # [N, 3]
    rays_d: Tensor,  # [N, 3]
    aabb: Tensor,  # [6] = xmin, ymin, zmin, xmax, ymax, zmax
    near: float = 0.0,
    far: float = float("inf"),
) -> tuple[Tensor, Tensor, Tensor]:
    """Entry and exit distances of rays through an axis-aligned box (slab method).

    Args:
        rays_o: ``[N, 3]`` origins.
        rays_d: ``[N, 3]`` directions (need not be unit; distances are in units of ``|rays_d|``).
        aabb: ``[6]`` box as ``min xyz, max xyz``.
        near: lower clamp of the entry distance.
        far: upper clamp of the exit distance.

    Returns:
        ``t_near [N]``, ``t_far [N]`` and ``hit [N]`` (bool; ``t_near < t_far`` after clamping).
        Where a ray misses, ``t_near == t_far``.
    """
    inv_d = 1.0 / torch.where(rays_d.abs() < 1e-12, torch.full_like(rays_d, 1e-12), rays_d)
    t0 = (aabb[:3] - rays_o) * inv_d
    t1 = (aabb[3:] - rays_o) * inv_d
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp(min=near)
    t_far = torch.maximum(t0, t1).amin(dim=-1).clamp(max=far)
    hit = t_near < t_far
    t_far = torch.where(hit, t_far, t_near)
    return t_near, t_far, hit
