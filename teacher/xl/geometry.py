"""Spatial partition of the scene box for the NeRF-XL partitioned teacher (pure functions).

The box is split into ``K`` disjoint axis-aligned boxes by recursive median splits of sample points
taken along the training rays, so each region holds a similar share of the content (NeRF-XL, Li et al.
2024, section 4.4). Boxes are convex, so every ray crosses each region in one segment
``[t_in_k, t_out_k]``, and the segments of one ray never overlap: the ray's volume-rendering integral
is the front-to-back composite of its per-region segments.
"""

from __future__ import annotations

import torch
from torch import Tensor

from core.rays import ray_aabb_intersect


def sample_points_along_rays(
    rays_o: Tensor,  # [N, 3]
    rays_d: Tensor,  # [N, 3]
    aabb: Tensor,  # [6]
    n_per_ray: int,
    near: float = 0.0,
    far: float = float("inf"),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Points uniformly distributed along the part of each ray inside the box.

    Args:
        rays_o: ``[N, 3]`` ray origins.
        rays_d: ``[N, 3]`` ray directions.
        aabb: ``[6]`` scene box.
        n_per_ray: points drawn per ray that hits the box.
        near: lower clamp of the entry distance.
        far: upper clamp of the exit distance.
        generator: random generator (deterministic partitions).

    Returns:
        ``[M, 3]`` points (rays missing the box give none).
    """
    t_near, t_far, hit = ray_aabb_intersect(rays_o, rays_d, aabb, near, far)
    rays_o, rays_d, t_near, t_far = rays_o[hit], rays_d[hit], t_near[hit], t_far[hit]
    u = torch.rand(rays_o.shape[0], n_per_ray, generator=generator, dtype=rays_o.dtype)
    t = t_near[:, None] + u * (t_far - t_near)[:, None]  # [N', P]
    return (rays_o[:, None, :] + t[..., None] * rays_d[:, None, :]).reshape(-1, 3)


def median_split_boxes(points: Tensor, aabb: Tensor, n_regions: int) -> Tensor:
    """Split ``aabb`` into ``n_regions`` boxes holding similar numbers of ``points``.

    Each step cuts the current box across its longest side at the quantile of its points that gives
    the two halves ``ceil(k/2)`` and ``floor(k/2)`` of its ``k`` regions (the median when ``k`` is
    even); a box without points is cut at its middle.

    Args:
        points: ``[M, 3]`` sample points (outside points are ignored).
        aabb: ``[6]`` box to split.
        n_regions: ``K >= 1``.

    Returns:
        ``[K, 6]`` disjoint boxes whose union is ``aabb``.
    """
    if n_regions < 1:
        raise ValueError(f"number of regions must be >= 1, got {n_regions}")
    aabb = aabb.detach().to(torch.float64).cpu()
    points = points.detach().to(torch.float64).cpu()
    inside = ((points >= aabb[:3]) & (points <= aabb[3:])).all(-1)
    return torch.stack(_split(points[inside], aabb, n_regions))


def _split(points: Tensor, box: Tensor, k: int) -> list[Tensor]:
    if k == 1:
        return [box.clone()]
    k_lo = (k + 1) // 2
    axis = int(torch.argmax(box[3:] - box[:3]))
    lo, hi = float(box[axis]), float(box[axis + 3])
    if points.shape[0] > 0:
        cut = float(torch.quantile(points[:, axis], k_lo / k))
    else:
        cut = lo + (hi - lo) * k_lo / k
    margin = 1e-3 * (hi - lo)  # no degenerate (empty) region
    cut = min(max(cut, lo + margin), hi - margin)
    box_lo, box_hi = box.clone(), box.clone()
    box_lo[axis + 3] = cut
    box_hi[axis] = cut
    below = points[:, axis] < cut
    return _split(points[below], box_lo, k_lo) + _split(points[~below], box_hi, k - k_lo)


def ray_segments(
    rays_o: Tensor,  # [N, 3]
    rays_d: Tensor,  # [N, 3]
    boxes: Tensor,  # [K, 6]
    near: float = 0.0,
    far: float = float("inf"),
) -> tuple[Tensor, Tensor]:
    """Entry and exit distance of every ray in every region.

    Args:
        rays_o: ``[N, 3]`` origins.
        rays_d: ``[N, 3]`` directions.
        boxes: ``[K, 6]`` region boxes.
        near: global near plane.
        far: global far plane.

    Returns:
        ``t_in [K, N]`` and ``t_out [K, N]``; a ray that misses region ``k`` has ``t_in == t_out``.
    """
    boxes = boxes.to(device=rays_o.device, dtype=rays_o.dtype)
    t_in, t_out = [], []
    for box in boxes:
        t0, t1, _ = ray_aabb_intersect(rays_o, rays_d, box, near, far)
        t_in.append(t0)
        t_out.append(t1)
    return torch.stack(t_in), torch.stack(t_out)


def crossing_order(t_in: Tensor, t_out: Tensor) -> Tensor:
    """Order in which each ray crosses the regions (front to back).

    Regions a ray misses go last (their segment is empty: ``C = 0``, ``T = 1``, so their place does
    not matter). Ties (a ray grazing a shared face) are broken by region index, identically on
    every rank.

    Args:
        t_in: ``[K, N]`` entry distances.
        t_out: ``[K, N]`` exit distances.

    Returns:
        ``[K, N]`` int64: ``order[i, n]`` is the ``i``-th region ray ``n`` enters.
    """
    key = torch.where(t_out > t_in, t_in, torch.full_like(t_in, float("inf")))
    return torch.sort(key, dim=0, stable=True).indices


def region_of_points(points: Tensor, boxes: Tensor) -> Tensor:
    """Index of the region holding each point (``[M, 3] -> [M]`` int64; ``-1`` outside every box).

    A point on a shared face goes to the region of lower index.
    """
    boxes = boxes.to(device=points.device, dtype=points.dtype)
    inside = ((points[:, None, :] >= boxes[None, :, :3]) & (points[:, None, :] <= boxes[None, :, 3:])).all(-1)
    first = torch.argmax(inside.to(torch.int8), dim=1)
    return torch.where(inside.any(1), first, torch.full_like(first, -1))
