"""The light field's empty-space grid: which rays can only show the background.

The teacher renders nothing outside its occupied cells: a ray that crosses none of them is pure
background in every pseudo-data view. The student cannot know that from its K points alone, so it is
told: the pseudo-data carries a coarse grid over the content box that covers every occupied cell of the
teacher (:func:`cover_grid`), the student dilates it so that no ray through an occupied cell can slip
between its K points (:func:`dilation_radius`), and a ray none of whose K bin-centre points lies in an
occupied cell of that grid (:func:`points_occupied`) gets the background without running the network:
in training (no batch slot spent on it), in the exported graph, in the runtimes and in the web page.

Cells are indexed x-major, ``(i * G + j) * G + k`` for cell ``(i, j, k)`` along ``(x, y, z)``, the
layout of ``teacher.occupancy``; a grid travels as ``{"resolution": G, "bits": base64 of numpy's
packbits of the flat bool array}`` (:func:`pack_grid`, :func:`unpack_grid`).
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.errors import UserError


def cover_grid(
    binary: Tensor,  # [R^3] bool
    aabb: Tensor,  # [6]
    box: Tensor,  # [6]
    resolution: int,
) -> Tensor:
    """The ``G^3`` grid over ``box`` whose occupied cells cover every occupied cell of ``binary``.

    Args:
        binary: ``[R^3]`` occupancy of an ``R^3`` grid over ``aabb`` (x-major).
        aabb: ``[6]`` box of ``binary``.
        box: ``[6]`` box of the new grid (the content box; occupied cells outside it are ignored).
        resolution: ``G`` cells per axis of the new grid.

    Returns:
        ``[G, G, G]`` bool: a cell is set when it overlaps an occupied cell of ``binary`` (conservative:
        every point of an occupied input cell inside ``box`` lies in a set cell).
    """
    R = round(binary.numel() ** (1 / 3))
    assert R**3 == binary.numel(), "binary must hold R^3 cells"
    G = resolution
    out = torch.zeros(G, G, G, dtype=torch.bool, device=binary.device)
    idx = binary.reshape(-1).nonzero()[:, 0]
    if idx.numel() == 0:
        return out
    ijk = torch.stack([idx // (R * R), (idx // R) % R, idx % R], -1).to(aabb.dtype)  # [M, 3]
    cell = (aabb[3:] - aabb[:3]) / R
    lo_w, hi_w = aabb[:3] + ijk * cell, aabb[:3] + (ijk + 1) * cell  # [M, 3] world bounds of each cell
    scale = G / (box[3:] - box[:3])
    # index range of the new cells each input cell overlaps (a tiny widening absorbs float rounding)
    lo = ((lo_w - box[:3]) * scale - 1e-4).floor().long()
    hi = ((hi_w - box[:3]) * scale + 1e-4).floor().long()
    inside = ((hi >= 0) & (lo < G)).all(-1)
    lo, hi = lo[inside].clamp(0, G - 1), hi[inside].clamp(0, G - 1)
    if lo.numel() == 0:
        return out
    span = (hi - lo).amax(0).tolist()  # new cells an input cell overlaps, minus one, per axis
    for di in range(span[0] + 1):
        for dj in range(span[1] + 1):
            for dk in range(span[2] + 1):
                c = lo + torch.tensor([di, dj, dk], device=lo.device)
                ok = (c <= hi).all(-1)
                out[c[ok, 0], c[ok, 1], c[ok, 2]] = True
    return out


def dilation_radius(resolution: int, n_points: int) -> int:
    """Cells by which a ``G^3`` grid over the content box must grow so that the K bin-centre points of
    every ray through a set cell include one in a set cell.

    A ray's segment lies inside the box, so along each axis it spans at most the box's extent, ``G``
    cells; each point of the segment is within half a bin (``G / (2 K)`` cells per axis) of a bin
    centre. Hence ``ceil(G / (2 K))``.
    """
    return math.ceil(resolution / (2 * n_points))


def dilate_grid(grid: Tensor, radius: int) -> Tensor:
    """``[G, G, G]`` bool grid grown by ``radius`` cells along each axis (a cube structuring element)."""
    if radius <= 0:
        return grid.clone()
    x = grid.float()[None, None]
    return torch.nn.functional.max_pool3d(x, 2 * radius + 1, stride=1, padding=radius)[0, 0] > 0


BIT_MASKS = (128, 64, 32, 16, 8, 4, 2, 1)  # bit of cell c in byte c // 8 (numpy's packbits order)


def points_occupied(
    unit: Tensor,  # [N, K, 3]
    bits: Tensor,  # [ceil(G^3 / 8)] uint8
    resolution: int,
) -> Tensor:
    """Whether any of each ray's points lies in a set cell (only ops ONNX has: it runs in the graph).

    Args:
        unit: ``[N, K, 3]`` points in the grid's unit cube (the content box mapped to ``[0, 1]^3``).
        bits: the ``G^3`` grid packed 8 cells per byte (:func:`pack_bits`).
        resolution: ``G``.

    Returns:
        ``[N]`` bool.
    """
    G = resolution
    ijk = (unit * G).floor().long().clamp(0, G - 1)
    cells = (ijk[..., 0] * G + ijk[..., 1]) * G + ijk[..., 2]  # [N, K]
    masks = torch.tensor(BIT_MASKS, dtype=torch.long, device=unit.device)
    byte = bits[torch.div(cells, 8, rounding_mode="floor")].long()
    return (torch.bitwise_and(byte, masks[cells % 8]) > 0).sum(-1) > 0


def pack_bits(grid: Tensor) -> Tensor:
    """``[G, G, G]`` bool -> ``[ceil(G^3 / 8)]`` uint8, 8 cells per byte, x-major (numpy's packbits)."""
    flat = grid.detach().cpu().numpy().reshape(-1).astype(bool)
    return torch.from_numpy(np.packbits(flat))


def pack_grid(grid: Tensor) -> dict[str, Any]:
    """``[G, G, G]`` bool -> ``{"resolution": G, "bits": base64}`` (JSON-able)."""
    return bits_record(pack_bits(grid), int(grid.shape[0]))


def bits_record(bits: Tensor, resolution: int) -> dict[str, Any]:
    """Packed ``bits`` (:func:`pack_bits`) of a ``resolution^3`` grid -> the JSON-able record."""
    raw = bits.detach().cpu().numpy().astype(np.uint8).tobytes()
    return {"resolution": int(resolution), "bits": base64.b64encode(raw).decode("ascii")}


def unpack_grid(packed: dict[str, Any], source: str) -> np.ndarray:
    """``{"resolution", "bits"}`` -> ``[G, G, G]`` bool array.

    Raises:
        UserError: malformed record (``source`` names the file or key).
    """
    try:
        G = int(packed["resolution"])
        raw = np.frombuffer(base64.b64decode(packed["bits"], validate=True), dtype=np.uint8)
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{source}: empty-space grid must be {{'resolution': G, 'bits': base64}}") from None
    if G < 1 or raw.size != (G**3 + 7) // 8:
        raise UserError(f"{source}: empty-space grid of resolution {G} needs {(G**3 + 7) // 8} bytes, "
                        f"has {raw.size}")
    return np.unpackbits(raw, count=G**3).astype(bool).reshape(G, G, G)
