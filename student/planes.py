"""Feature planes: learned 2-D feature maps read with bilinear lookups (ONNX ``GridSample``).

A tri-plane holds three ``[C, R, R]`` maps over the xy, xz and yz faces of the content box; a point's
feature is the sum of its three bilinear lookups (EG3D's factorisation, LightSpeed's planes). Several
tri-planes of different resolutions (levels) give coarse-to-fine features whose lookups stay cheap: four
corner reads per plane, against eight per cell and level of a 3-D grid, and ``GridSample`` is one of the
ops every ONNX Runtime provider runs (4-D, bilinear, zero padding, ``align_corners=False``: the CPU
provider's fast path).

Points are in the box's normalised frame ``[-1, 1]^3``; a point outside reads zeros (zero padding), so
rays that leave the box add nothing.

On the CPU, lookups outside an ONNX export run on our C++/OpenMP kernel (:mod:`cuda.planes`: channels-last
texels, a multi-threaded backward) when it builds here; :func:`grid_lookup` (PyTorch's ``grid_sample``,
what the exported graph computes) is its reference and runs everywhere else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cuda.planes import kernel_applies, plane_lookup

PLANE_AXES = ((0, 1), (0, 2), (1, 2))  # the point coordinates indexing each plane (x: width, y: height)
MAX_LOOKUP_BATCHES = 8  # batch entries a training lookup is split into at most (lookup_batches)


Coords = tuple[Tensor, Tensor, Tensor]  # a point set's x, y and z, each [B, P, Q]


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
    return sample_plane_coords(planes, split_coords(points))


def split_coords(points: Tensor) -> Coords:  # [..., 3] -> 3 x [...]
    """A point tensor's x, y and z (slices: integer indexing would export as ``Gather``)."""
    x, y, z = (points[..., i:i + 1].squeeze(-1) for i in range(3))
    return x, y, z


def sample_plane_coords(planes: Tensor, coords: Coords) -> Tensor:  # 3 x [B, P, Q] -> [B, C, P, Q]
    """:func:`sample_planes` of points given one coordinate at a time (``[B, P, Q]`` each): each plane's
    lookup grid is built from two of them, with no ``[..., 3]`` tensor in the graph (ONNX Runtime's CPU
    broadcasts over a last axis of 3 element by element)."""
    if kernel_applies(planes, coords[0]):
        B, P, Q = coords[0].shape
        out = plane_lookup(planes, torch.stack(coords, dim=-1).reshape(-1, 3))  # [B*P*Q, C]
        return out.reshape(B, P, Q, -1).permute(0, 3, 1, 2)
    return grid_lookup(planes, coords)


def grid_lookup(planes: Tensor, coords: Coords) -> Tensor:  # [3, C, R, R], 3 x [B, P, Q] -> [B, C, P, Q]
    """:func:`sample_plane_coords` with PyTorch's ``grid_sample``: what the exported graph computes (one
    ``GridSample`` node a plane) and the kernel's reference."""
    B, P, Q = coords[0].shape
    n = lookup_batches(B * P, planes)
    out: Tensor | None = None
    for i, (a, b) in enumerate(PLANE_AXES):
        grid = torch.stack((coords[a], coords[b]), dim=-1)  # [B, P, Q, 2]
        if not torch.onnx.is_in_onnx_export():  # an exported graph draws one camera (B = n = 1): no Reshape
            grid = grid.reshape(n, B * P // n, Q, 2)
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
        return self.read(split_coords(points))

    def read(self, coords: Coords) -> Tensor:  # 3 x [B, P, Q] -> [B, C*L, P, Q]
        """:meth:`forward` of points given one coordinate at a time (:func:`sample_plane_coords`)."""
        feats = [sample_plane_coords(p, coords) for p in self.planes]
        return feats[0] if len(feats) == 1 else torch.cat(feats, dim=1)
