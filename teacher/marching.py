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
    device = rays_o.device
    o = offsets if offsets is not None else torch.zeros(n_rays, device=device)
    n_steps = torch.ceil((t_max - t_min) / step_size - o).clamp(min=0).long()  # [N]
    ray_indices = torch.repeat_interleave(torch.arange(n_rays, device=device), n_steps)
    first = torch.cumsum(n_steps, 0) - n_steps  # [N]
    k = torch.arange(ray_indices.numel(), device=device) - first[ray_indices]
    t_starts = t_min[ray_indices] + (k + o[ray_indices]) * step_size
    t_ends = torch.minimum(t_starts + step_size, t_max[ray_indices])
    samples = RaySamples(ray_indices, t_starts, t_ends)
    if occupancy is None:
        return samples
    assert aabb is not None, "an occupancy grid needs its aabb"
    resolution = round(occupancy.numel() ** (1 / 3))
    x = samples.positions(rays_o, rays_d)
    return samples.select(occupancy[cell_indices(x, aabb, resolution)])


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
