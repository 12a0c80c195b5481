"""Occupancy grid over the scene box (Instant-NGP): which cells may hold matter.

The grid keeps, per cell, an exponential moving average of the *opacity proxy* ``sigma * step_size``
(as nerfacc's Instant-NGP recipe does). Every ``update_every`` training steps all values decay by
``decay`` and a set of cells is re-measured at a random point inside each cell (the new value is the
maximum of the decayed one and the measurement). During the first ``warmup_steps`` steps every cell is
measured; afterwards a ``sample_fraction`` of the cells drawn uniformly plus as many drawn among the
occupied ones. A cell is occupied when its value exceeds ``min(threshold, mean)``. Before the first
update all cells are occupied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core.checks import at_least, in_range


@dataclass
class OccupancyConfig:
    """Occupancy grid settings (Instant-NGP's: 128^3, decay 0.95, every 16 steps, threshold 0.01).

    Attributes:
        resolution: cells per axis.
        decay: EMA decay applied at each update.
        threshold: opacity (``sigma * step``) above which a cell counts as occupied.
        update_every: training steps between updates.
        warmup_steps: steps during which every cell is re-measured at each update.
        sample_fraction: after warm-up, fraction of cells measured uniformly (and again among the
            occupied ones) per update (Instant-NGP: 1/4).
        chunk: points per density query during an update.
        carve: exclude cells outside the visual hull of the training alpha masks.
        carve_dilation: pixels by which masks grow before carving (covers a cell's footprint).
        carve_min_views: views that must see background at a cell to carve it: a strict hull (1) loses
            what one wrong mask or a slightly off pose cuts away (the tankard's handle: 2-3.5% of its
            test-view masks fell outside the strict hull; 0-0.7% with 3).
    """

    resolution: int = 128
    decay: float = 0.95
    threshold: float = 0.01
    update_every: int = 16
    warmup_steps: int = 256
    sample_fraction: float = 0.25
    chunk: int = 65536
    carve: bool = False
    carve_dilation: int = 3
    carve_min_views: int = 3

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value."""
        at_least(self, 1, "resolution", "update_every", "chunk", "carve_min_views")
        at_least(self, 0, "warmup_steps", "carve_dilation")
        in_range(self, 0.0, 1.0, "decay", "threshold", "sample_fraction")


def cell_indices(
    x: Tensor,  # [S, 3]
    aabb: Tensor,  # [6]
    resolution: int,
) -> Tensor:
    """Flat occupancy-cell index of world points (row-major ``[R, R, R]``, x slowest).

    Args:
        x: ``[S, 3]`` world points (clamped into the box).
        aabb: ``[6]`` box.
        resolution: cells per axis ``R``.

    Returns:
        ``[S]`` int64 flat cell index of each point, ``ix * R^2 + iy * R + iz``.
    """
    lo, hi = aabb[:3], aabb[3:]
    ijk = ((x - lo) / (hi - lo) * resolution).floor().long().clamp(0, resolution - 1)
    return (ijk[:, 0] * resolution + ijk[:, 1]) * resolution + ijk[:, 2]


def cell_corners(
    flat: Tensor,  # [M]
    resolution: int,
) -> Tensor:
    """Integer cell coordinates ``[M, 3]`` (x, y, z) of flat indices (inverse of :func:`cell_indices`)."""
    R = resolution
    return torch.stack([flat // (R * R), (flat // R) % R, flat % R], dim=-1)


class OccupancyGrid(nn.Module):
    """Binary occupancy of ``R^3`` cells of the box, refreshed from the field's density.

    Args:
        cfg: grid settings.
        aabb: ``[6]`` box.
    """

    aabb: Tensor
    values: Tensor
    binary: Tensor
    allowed: Tensor

    def __init__(self, cfg: OccupancyConfig, aabb: Tensor):
        super().__init__()
        self.cfg = cfg
        n = cfg.resolution**3
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone())
        self.register_buffer("values", torch.zeros(n))
        self.register_buffer("binary", torch.ones(n, dtype=torch.bool))
        self.register_buffer("allowed", torch.ones(n, dtype=torch.bool))

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    def occupied(self, x: Tensor) -> Tensor:
        """``[S]`` bool: whether world points ``x [S, 3]`` fall in occupied cells."""
        return self.binary[cell_indices(x, self.aabb, self.cfg.resolution)]

    def restrict(self, allowed: Tensor) -> None:
        """Exclude for good the cells where ``allowed [R^3]`` is False."""
        self.allowed.copy_(allowed.reshape(-1))
        self.binary &= self.allowed

    def _cells_to_measure(self, step: int) -> Tensor:
        candidates = self.allowed.nonzero()[:, 0]
        if step < self.cfg.warmup_steps:
            return candidates
        m = max(1, int(candidates.numel() * self.cfg.sample_fraction))
        uniform = candidates[torch.randint(0, candidates.numel(), (m,), device=candidates.device)]
        occupied = self.binary.nonzero()[:, 0]
        if occupied.numel() == 0:
            return uniform
        picked = occupied[torch.randint(0, occupied.numel(), (m,), device=occupied.device)]
        return torch.cat([uniform, picked])

    @torch.no_grad()
    def update(self, step: int, opacity_fn: Callable[[Tensor], Tensor], force: bool = False) -> bool:
        """Refresh the grid if ``step`` is an update step (or ``force``).

        Args:
            step: the training step (0-based).
            opacity_fn: maps world points ``[M, 3]`` to opacity proxies ``[M]`` (``sigma * step``).
            force: update regardless of ``step``.

        Returns:
            Whether an update happened.
        """
        if not force and step % self.cfg.update_every != 0:
            return False
        R = self.cfg.resolution
        cells = self._cells_to_measure(step)
        lo, hi = self.aabb[:3], self.aabb[3:]
        measured = torch.empty(cells.numel(), device=cells.device)
        for start in range(0, cells.numel(), self.cfg.chunk):
            idx = cells[start : start + self.cfg.chunk]
            u = (cell_corners(idx, R).float() + torch.rand(idx.numel(), 3, device=idx.device)) / R
            measured[start : start + self.cfg.chunk] = opacity_fn(lo + u * (hi - lo))
        values = self.values * self.cfg.decay
        # scatter_reduce keeps the max when a cell was drawn twice
        values = values.scatter_reduce(0, cells, measured, reduce="amax", include_self=True)
        self.values.copy_(values)
        threshold = min(self.cfg.threshold, float(values[self.allowed].mean()))
        self.binary.copy_((values > threshold) & self.allowed)
        return True

    def occupied_aabb(self) -> Tensor:
        """``[6]`` smallest box around the occupied cells (the full box if none is occupied)."""
        occupied = self.binary.nonzero()[:, 0]
        if occupied.numel() == 0:
            return self.aabb.clone()
        ijk = cell_corners(occupied, self.cfg.resolution)
        cell = (self.aabb[3:] - self.aabb[:3]) / self.cfg.resolution
        lo = self.aabb[:3] + ijk.amin(0) * cell
        hi = self.aabb[:3] + (ijk.amax(0) + 1) * cell
        return torch.cat([lo, hi])

    def occupancy_fraction(self) -> float:
        """Fraction of occupied cells."""
        return float(self.binary.float().mean())


def carve_from_masks(
    aabb: Tensor,  # [6]
    resolution: int,
    c2w: Tensor,  # [C, 4, 4]
    K: Tensor,  # [C, 3, 3]
    alphas: Tensor,  # [C, H, W]
    dilation: int = 3,
    min_views: int = 1,
) -> Tensor:
    """Cells inside the visual hull of alpha masks (OpenCV cameras of ``core.cameras``).

    A cell is carved away when its centre projects, in front of at least ``min_views`` cameras, onto a
    pixel whose alpha is 0 everywhere within ``dilation`` pixels. Projections outside an image carve
    nothing.

    Returns:
        ``[R^3]`` bool, True for cells that may hold matter (flat order of :func:`cell_indices`).
    """
    R = resolution
    H, W = alphas.shape[-2:]
    mask = torch.nn.functional.max_pool2d((alphas > 0).float()[:, None], 2 * dilation + 1, 1, dilation)[:, 0]
    centres = (cell_corners(torch.arange(R**3), R).float() + 0.5) / R
    x = aabb[:3] + centres * (aabb[3:] - aabb[:3])  # [M, 3]
    alive = torch.arange(R**3)  # cells not carved yet: the work shrinks view by view
    votes = torch.zeros(R**3, dtype=torch.int32)  # views that saw background at each cell
    for c in range(c2w.shape[0]):
        cam = (x[alive] - c2w[c, :3, 3]) @ c2w[c, :3, :3]  # world -> camera: R^T (x - t)
        uvw = cam @ K[c].T
        z = uvw[:, 2].clamp_min(1e-6)
        u, v = uvw[:, 0] / z, uvw[:, 1] / z
        inside = (uvw[:, 2] > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        hit = mask[c, v.clamp(0, H - 1).long(), u.clamp(0, W - 1).long()] > 0
        votes[alive[inside & ~hit]] += 1
        alive = alive[votes[alive] < min_views]
    keep = torch.zeros(R**3, dtype=torch.bool)
    keep[alive] = True
    return keep
