"""Feature planes: learned 2-D feature maps read with bilinear lookups (ONNX ``GridSample``).

A tri-plane holds three ``[C, R, R]`` maps over the xy, xz and yz faces of the content box; a point's
feature is the sum of its three bilinear lookups (EG3D's factorisation, LightSpeed's planes). Several
tri-planes of different resolutions (levels) give coarse-to-fine features whose lookups stay cheap: four
corner reads per plane, against eight per cell and level of a 3-D grid, and ``GridSample`` is one of the
ops every ONNX Runtime provider runs (4-D, bilinear, zero padding, ``align_corners=False``: the CPU
provider's fast path).

Points are in the box's normalised frame ``[-1, 1]^3``; a point outside reads zeros (zero padding), so
rays that leave the box add nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PLANE_AXES = ((0, 1), (0, 2), (1, 2))  # the point coordinates indexing each plane (x: width, y: height)
MAX_LOOKUP_BATCHES = 8  # batch entries a training lookup is split into at most (lookup_batches)


def sample_planes(
    planes: Tensor,  # [3, C, R, R]
    points: Tensor,  # [B, P, Q, 3] in [-1, 1]
) -> Tensor:  # [B, C, P, Q]
    """Sum of the three bilinear lookups of a tri-plane at ``points``.

    The batch is folded into the lookup grid (``[1, B*P, Q, 2]``), so the graph reads each plane once
    with a batch of one: no ``Expand`` of the planes, one ``GridSample`` node per plane.

    Args:
        planes: ``[3, C, R, R]`` the xy, xz and yz planes.
        points: ``[B, P, Q, 3]`` normalised coordinates (``-1``/``1``: the outer edges of the border
            texels, ``align_corners=False``); outside reads zeros.

    Returns:
        ``[B, C, P, Q]`` features.
    """
    B, P, Q, _ = points.shape
    n = lookup_batches(B * P, planes)
    flat = points.reshape(n, B * P // n, Q, 3)
    out: Tensor | None = None
    for i, (a, b) in enumerate(PLANE_AXES):
        grid = torch.cat((flat[..., a:a + 1], flat[..., b:b + 1]), dim=-1)  # [n, B*P/n, Q, 2]
        plane = planes[i:i + 1] if n == 1 else planes[i:i + 1].expand(n, -1, -1, -1)
        f = F.grid_sample(plane, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = f if out is None else out + f
    assert out is not None
    C = planes.shape[1]
    out = out if n == 1 else out.transpose(0, 1)  # [C, n, B*P/n, Q]: the rows in order
    return out.reshape(C, B, P, Q).transpose(0, 1)


def lookup_batches(rows: int, planes: Tensor) -> int:
    """How many batch entries a lookup of ``rows`` grid rows is split into: 1 for inference and export
    (one ``GridSample`` node a plane, no ``Expand``), up to 8 when the planes' gradient is computed:
    PyTorch's CPU backward of ``grid_sample`` runs one thread per batch entry (``benchmarks/RESULTS.md``,
    section ``image_train_step``).
    """
    if not (torch.is_grad_enabled() and planes.requires_grad) or torch.onnx.is_in_onnx_export():
        return 1
    return math.gcd(rows, MAX_LOOKUP_BATCHES)


class PlaneEncoding(nn.Module):
    """Tri-planes at several resolutions, their features concatenated per point.

    Args:
        channels: ``C`` features per plane and level.
        resolutions: ``R`` of each level's planes (e.g. ``(64, 256)``).
        init_std: standard deviation of the initial plane values (small: features start near zero, the
            decoder's first layers are not saturated).
    """

    def __init__(self, channels: int, resolutions: Sequence[int], init_std: float = 0.1):
        super().__init__()
        if channels < 1 or not resolutions or min(resolutions) < 2:
            raise ValueError("planes need channels >= 1 and at least one resolution >= 2")
        self.channels = channels
        self.resolutions = tuple(int(r) for r in resolutions)
        self.planes = nn.ParameterList(
            nn.Parameter(torch.randn(3, channels, r, r) * init_std) for r in self.resolutions)

    @property
    def out_dim(self) -> int:
        """Features per point: ``C`` times the number of levels."""
        return self.channels * len(self.resolutions)

    def forward(self, points: Tensor) -> Tensor:  # [B, P, Q, 3] -> [B, C*L, P, Q]
        """Features of ``points`` (normalised box frame), levels concatenated along channels."""
        feats = [sample_planes(p, points) for p in self.planes]
        return feats[0] if len(feats) == 1 else torch.cat(feats, dim=1)
