"""Multiresolution hash encoding (Instant-NGP): layout and the pure-PyTorch reference.

The layout follows tiny-cuda-nn's ``HashGrid`` encoding exactly, so one flat ``params`` vector moves
between every backend (tiny-cuda-nn, our kernels, this reference):

* level ``l`` has scale ``s_l = 2^(l log2 b) N_min - 1`` and resolution ``R_l = ceil(s_l) + 1``
  (``b`` the per-level scale);
* it holds ``T_l = min(next_multiple_of_8(R_l^3), T)`` entries of ``F`` features, levels stored one
  after another (``offsets``), features of one entry contiguous;
* a point ``x`` in ``[0, 1]^3`` maps to ``p = s_l x + 0.5``; its 8 corners are ``floor(p) + {0,1}^3``
  with trilinear weights from ``p - floor(p)``;
* a corner's entry is its dense row-major index ``i + j R_l + k R_l^2`` when ``R_l^3 <= T`` (dense
  level), else the spatial hash ``(i * 1) xor (j * 2654435761) xor (k * 805459861)`` in uint32
  arithmetic; either is taken modulo ``T_l``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

PRIMES = (1, 2654435761, 805459861)


@dataclass(frozen=True)
class HashGridSpec:
    """Level layout of a hash grid of a given shape (a config names one as
    :class:`cuda.backend.HashGridConfig`, whose defaults are Instant-NGP's). ``per_level_scale`` of 0
    derives it from ``max_resolution``."""

    n_levels: int
    n_features: int
    log2_hashmap_size: int
    base_resolution: int
    max_resolution: int
    per_level_scale: float = 0.0
    scales: tuple[float, ...] = field(init=False)
    resolutions: tuple[int, ...] = field(init=False)
    sizes: tuple[int, ...] = field(init=False)
    offsets: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.n_levels < 1 or self.n_features < 1 or not 4 <= self.log2_hashmap_size <= 30:
            raise ValueError(  # not {self}: its repr needs the fields computed below
                f"invalid hash grid shape: n_levels={self.n_levels}, n_features={self.n_features}, "
                f"log2_hashmap_size={self.log2_hashmap_size} (4..30)"
            )
        b = self.per_level_scale
        if b <= 0:
            b = math.exp(math.log(self.max_resolution / self.base_resolution) / max(self.n_levels - 1, 1))
            object.__setattr__(self, "per_level_scale", b)
        T = 2**self.log2_hashmap_size
        scales, res, sizes, offsets = [], [], [], [0]
        for level in range(self.n_levels):
            s = 2.0 ** (level * math.log2(b)) * self.base_resolution - 1.0
            r = int(math.ceil(s)) + 1
            size = min(((r**3 + 7) // 8) * 8, T) if r**3 <= T else T
            scales.append(s)
            res.append(r)
            sizes.append(size)
            offsets.append(offsets[-1] + size)
        object.__setattr__(self, "scales", tuple(scales))
        object.__setattr__(self, "resolutions", tuple(res))
        object.__setattr__(self, "sizes", tuple(sizes))
        object.__setattr__(self, "offsets", tuple(offsets))

    @property
    def n_params(self) -> int:
        """Number of floats in the flat ``params`` vector."""
        return self.offsets[-1] * self.n_features

    @property
    def n_output_dims(self) -> int:
        return self.n_levels * self.n_features

    def is_dense(self, level: int) -> bool:
        return self.resolutions[level] ** 3 <= 2**self.log2_hashmap_size

    def tcnn_config(self) -> dict:
        """The equivalent tiny-cuda-nn encoding config."""
        return {
            "otype": "HashGrid",
            "n_levels": self.n_levels,
            "n_features_per_level": self.n_features,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
            "interpolation": "Linear",
        }


_CORNERS = torch.tensor([[(c >> d) & 1 for d in range(3)] for c in range(8)], dtype=torch.int64)  # [8, 3]


def grid_index_ref(corners: Tensor, spec: HashGridSpec, level: int) -> Tensor:
    """Entry index within a level of integer corners ``[..., 3]`` (int64) -> ``[...]``."""
    size = spec.sizes[level]
    if spec.is_dense(level):
        r = spec.resolutions[level]
        idx = corners[..., 0] + corners[..., 1] * r + corners[..., 2] * (r * r)
    else:
        idx = (corners[..., 0] * PRIMES[0]) ^ (corners[..., 1] * PRIMES[1]) ^ (corners[..., 2] * PRIMES[2])
        idx = idx & 0xFFFFFFFF
    return idx % size


def hash_encode_ref(x: Tensor, params: Tensor, spec: HashGridSpec) -> Tensor:
    """Encode points with the hash grid (pure PyTorch; differentiable in ``params`` and ``x``).

    Args:
        x: ``[N, 3]`` points in ``[0, 1]^3`` (float32 or float64).
        params: ``[n_params]`` flat table in the layout of :class:`HashGridSpec`.
        spec: the grid's shape.

    Returns:
        ``[N, L * F]`` features, level-major (level 0's ``F`` features first).
    """
    F = spec.n_features
    table = params.view(-1, F)
    corners_off = _CORNERS.to(x.device)
    feats = []
    for level in range(spec.n_levels):
        pos = x * spec.scales[level] + 0.5  # [N, 3]
        base = torch.floor(pos)
        frac = pos - base  # [N, 3]
        corners = base.to(torch.int64)[:, None, :] + corners_off  # [N, 8, 3]
        w = torch.where(corners_off.bool(), frac[:, None, :], 1.0 - frac[:, None, :]).prod(-1)  # [N, 8]
        idx = grid_index_ref(corners, spec, level) + spec.offsets[level]  # [N, 8]
        feats.append((w[..., None] * table[idx]).sum(1))  # [N, F]
    return torch.cat(feats, dim=-1)
