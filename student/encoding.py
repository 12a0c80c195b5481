"""Ray encoding of R2L: K points along each ray, normalised by the scene box, positionally encoded.

Only ONNX-friendly ops (arithmetic, sin/cos, concat, reshape), so the encoding lives inside the
exported graph.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def ray_points(
    rays_o: Tensor,  # [N, 3]
    rays_d: Tensor,  # [N, 3]
    near: float,
    far: float,
    n_points: int,
    jitter: bool = False,
) -> Tensor:
    """``n_points`` points per ray, one per equal bin of ``[near, far]``.

    Args:
        rays_o: ``[N, 3]`` origins.
        rays_d: ``[N, 3]`` unit directions.
        near: start of the sampled range.
        far: end of the sampled range.
        n_points: ``K`` points per ray.
        jitter: uniform random position within each bin (training) instead of the bin centre.

    Returns:
        ``[N, K, 3]`` points.
    """
    n = rays_o.shape[0]
    offsets = torch.arange(n_points, dtype=rays_o.dtype, device=rays_o.device)  # [K]
    if jitter:
        u = torch.rand(n, n_points, dtype=rays_o.dtype, device=rays_o.device)
    else:
        u = torch.full((1, n_points), 0.5, dtype=rays_o.dtype, device=rays_o.device)
    t = near + (far - near) * (offsets + u) / n_points  # [N or 1, K]
    return rays_o[:, None, :] + t[..., None] * rays_d[:, None, :]


def positional_encoding(x: Tensor, n_freqs: int) -> Tensor:
    """NeRF positional encoding ``[x, sin(2^k x), cos(2^k x)]_{k<n_freqs}`` along the last axis.

    Args:
        x: ``[N, D]`` values.
        n_freqs: number of octaves.

    Returns:
        ``[N, D * (1 + 2 n_freqs)]``.
    """
    freqs = 2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)  # [n_freqs]
    xf = (x[..., None] * freqs).flatten(-2)  # [N, D * n_freqs]
    return torch.cat([x, torch.sin(xf), torch.cos(xf)], dim=-1)


class RayEncoder(nn.Module):
    """Rays -> the student's input vector.

    Args:
        aabb: ``[6]`` scene box; points are mapped so the box becomes ``[-1, 1]^3``.
        near: start of the sampled ray range.
        far: end of the sampled ray range.
        n_points: ``K`` points per ray.
        n_freqs: positional-encoding octaves.
    """

    center: Tensor  # [3] box centre (buffer)
    half_extent: Tensor  # [3] box half-size (buffer)

    def __init__(self, aabb: Tensor, near: float, far: float, n_points: int = 16, n_freqs: int = 10):
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32)
        self.register_buffer("center", (aabb[:3] + aabb[3:]) / 2)
        self.register_buffer("half_extent", (aabb[3:] - aabb[:3]) / 2)
        self.near, self.far = float(near), float(far)
        self.n_points, self.n_freqs = n_points, n_freqs

    @property
    def out_dim(self) -> int:
        return self.n_points * 3 * (1 + 2 * self.n_freqs)

    def forward(self, rays_o: Tensor, rays_d: Tensor, jitter: bool = False) -> Tensor:
        """``rays_o, rays_d [N, 3]`` -> encoding ``[N, K * 3 * (1 + 2 n_freqs)]``."""
        pts = ray_points(rays_o, rays_d, self.near, self.far, self.n_points, jitter)  # [N, K, 3]
        pts = (pts - self.center) / self.half_extent
        return positional_encoding(pts.flatten(1), self.n_freqs)
