"""Ray marching over per-ray intervals (pure functions), nerfacc-style packed samples.

:func:`march_rays` places samples of a fixed step along each ray's ``[t_min, t_max]`` and drops those
whose midpoint falls in an empty cell of the occupancy grid. :func:`early_termination_mask` then keeps
only samples that still receive light (transmittance in front of them at least ``min_transmittance``),
which is how rays stop early: a cheap no-grad density pass decides which samples matter.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from core.rendering import render_transmittance_from_density
from teacher.occupancy import cell_indices


class RaySamples(NamedTuple):
    """Packed samples, sorted by ray then by distance.

    Attributes:
        ray_indices: ``[S]`` int64 ray of each sample.
        t_starts: ``[S]`` interval starts.
        t_ends: ``[S]`` interval ends.
    """

    ray_indices: Tensor
    t_starts: Tensor
    t_ends: Tensor

    def positions(self, rays_o: Tensor, rays_d: Tensor) -> Tensor:
        """Midpoints ``[S, 3]`` of the intervals, for rays ``[N, 3]``."""
        t_mid = 0.5 * (self.t_starts + self.t_ends)
        return rays_o[self.ray_indices] + t_mid[:, None] * rays_d[self.ray_indices]

    def select(self, mask: Tensor) -> RaySamples:
        """The samples where ``mask [S]`` holds (order kept)."""
        return RaySamples(self.ray_indices[mask], self.t_starts[mask], self.t_ends[mask])


def march_rays(
    rays_o: Tensor,  # [N, 3]
    rays_d: Tensor,  # [N, 3]
    t_min: Tensor,  # [N]
    t_max: Tensor,  # [N]
    step_size: float,
    occupancy: Tensor | None = None,  # [R^3] bool
    aabb: Tensor | None = None,  # [6]
    offsets: Tensor | None = None,  # [N] in [0, 1)
) -> RaySamples:
    """Fixed-step samples along each ray's interval, skipping empty occupancy cells.

    Sample ``k`` of ray ``n`` covers ``[t_min + (k + o_n) step, min(t_min + (k + 1 + o_n) step, t_max)]``
    where ``o_n`` is the ray's offset (random jitter in training, 0 otherwise).

    Args:
        rays_o: ``[N, 3]`` origins.
        rays_d: ``[N, 3]`` unit directions.
        t_min: ``[N]`` interval starts.
        t_max: ``[N]`` interval ends (``t_max <= t_min``: no samples).
        step_size: sample spacing along the ray.
        occupancy: ``[R^3]`` flat occupancy bits (row-major over x, y, z) or None (all occupied).
        aabb: ``[6]`` box the occupancy grid covers (needed with ``occupancy``).
        offsets: ``[N]`` per-ray offsets in units of ``step_size``, or None for 0.

    Returns:
        :class:`RaySamples` sorted by ray.
    """
    n_rays = rays_o.shape[0]
    o = offsets if offsets is not None else torch.zeros(n_rays, device=rays_o.device)
    n_steps = torch.ceil((t_max - t_min) / step_size - o).clamp(min=0).long()  # [N]
    if occupancy is None:
        ray_indices, k = _enumerate(n_steps)
    else:
        assert aabb is not None, "an occupancy grid needs its aabb"
        ray_indices, k = _candidate_steps(rays_o, rays_d, t_min, o, n_steps, step_size, occupancy, aabb)
    t_starts = t_min[ray_indices] + (k + o[ray_indices]) * step_size
    t_ends = torch.minimum(t_starts + step_size, t_max[ray_indices])
    samples = RaySamples(ray_indices, t_starts, t_ends)
    if occupancy is None:
        return samples
    assert aabb is not None, "an occupancy grid needs its aabb"
    resolution = round(occupancy.numel() ** (1 / 3))
    x = samples.positions(rays_o, rays_d)
    return samples.select(occupancy[cell_indices(x, aabb, resolution)])


def dilate_occupancy(occupancy: Tensor) -> Tensor:
    """Cells with an occupied cell among their 27 neighbours (``[R^3]`` bool -> ``[R^3]`` bool)."""
    R = round(occupancy.numel() ** (1 / 3))
    grid = occupancy.view(R, R, R).clone()
    for dim in range(3):  # separable 3x3x3 max: three 1-D passes of shifted ORs
        src = grid.clone()
        grid.narrow(dim, 1, R - 1).logical_or_(src.narrow(dim, 0, R - 1))
        grid.narrow(dim, 0, R - 1).logical_or_(src.narrow(dim, 1, R - 1))
    return grid.view(-1)


def _enumerate(counts: Tensor) -> tuple[Tensor, Tensor]:
    """``counts [N]`` -> owner ``[M]`` and index within its owner ``[M]`` (``M = sum(counts)``)."""
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    first = torch.cumsum(counts, 0) - counts
    return owner, torch.arange(owner.numel(), device=counts.device) - first[owner]


def _candidate_steps(
    rays_o: Tensor,  # [N, 3]
    rays_d: Tensor,  # [N, 3]
    t_min: Tensor,  # [N]
    offsets: Tensor,  # [N]
    n_steps: Tensor,  # [N]
    step_size: float,
    occupancy: Tensor,  # [R^3]
    aabb: Tensor,  # [6]
) -> tuple[Tensor, Tensor]:
    """Steps ``(ray, k)`` that may fall in occupied cells, found a group of ``g`` steps at a time.

    A group's sample midpoints lie within ``g * step / 2`` of the group's midpoint; while that is at
    most one cell, a group whose midpoint has no occupied cell among its 27 neighbours holds no sample
    in an occupied cell, so whole groups are skipped with one lookup (the exact per-sample test
    follows in :func:`march_rays`).
    """
    R = round(occupancy.numel() ** (1 / 3))
    cell = float(((aabb[3:] - aabb[:3]) / R).min())
    g = int(2 * cell / step_size)
    if g < 2:
        return _enumerate(n_steps)
    ray_indices, group = _enumerate((n_steps + g - 1) // g)
    t_mid = t_min[ray_indices] + (group * g + 0.5 * g + offsets[ray_indices]) * step_size
    x = rays_o[ray_indices] + t_mid[:, None] * rays_d[ray_indices]
    keep = dilate_occupancy(occupancy)[cell_indices(x, aabb, R)]
    ray_indices, group = ray_indices[keep], group[keep]
    ray_indices = ray_indices.repeat_interleave(g)
    k = group.repeat_interleave(g) * g + torch.arange(g, device=group.device).repeat(group.numel())
    valid = k < n_steps[ray_indices]
    return ray_indices[valid], k[valid]


def early_termination_mask(
    samples: RaySamples,
    sigmas: Tensor,  # [S]
    n_rays: int,
    min_transmittance: float = 1e-4,
    alpha_threshold: float = 0.0,
) -> Tensor:
    """Samples that contribute: light still reaches them and (optionally) they are not transparent.

    Args:
        samples: packed samples of ``n_rays`` rays.
        sigmas: ``[S]`` densities of the samples.
        n_rays: number of rays ``N``.
        min_transmittance: a ray stops once its transmittance falls below this (Instant-NGP: 1e-4).
        alpha_threshold: samples with opacity below this are dropped too (0 keeps them all).

    Returns:
        ``[S]`` bool mask.
    """
    trans, alphas = render_transmittance_from_density(
        samples.t_starts, samples.t_ends, sigmas, samples.ray_indices, n_rays
    )
    keep = trans >= min_transmittance
    if alpha_threshold > 0:
        keep &= alphas >= alpha_threshold
    return keep
