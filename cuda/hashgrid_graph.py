"""The hash-grid lookup written in graph-friendly PyTorch ops, for export (ONNX) and as a third twin.

Same layout and result as :func:`cuda.hashgrid_ref.hash_encode_ref`, but built from ops every ONNX
runtime has (``Floor``, ``Cast``, int64 ``Mul``/``Add``/``BitwiseXor``/``BitwiseAnd``/``Mod``,
``Gather``, broadcasting ``Mul``/``ReduceSum``), vectorised over the 8 corners: per level the corner
hashes are two broadcast XORs of per-axis terms and the trilinear weights an outer product of per-axis
weights. Differentiable in ``params`` (the lookup is a gather), so it also trains, slowly: training
uses the compiled kernels behind :class:`cuda.backend.HashGrid`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cuda.hashgrid_ref import PRIMES, HashGridSpec


def _axis_terms(base: Tensor, frac: Tensor, axis: int, mult: int) -> tuple[Tensor, Tensor]:
    """Integer term ``(base + {0, 1}) * mult`` and weights ``{1 - frac, frac}`` of one axis: ``[N, 2]`` each."""
    b = base[:, axis : axis + 1]  # [N, 1] int64
    f = frac[:, axis : axis + 1]  # [N, 1]
    return torch.cat([b, b + 1], dim=1) * mult, torch.cat([1.0 - f, f], dim=1)


def hash_encode_graph(x: Tensor, params: Tensor, spec: HashGridSpec) -> Tensor:
    """Encode points with the hash grid in export-friendly ops.

    Args:
        x: ``[N, 3]`` float32 points in ``[0, 1]^3``.
        params: ``[n_params]`` flat table in the layout of :class:`HashGridSpec`.
        spec: the grid's shape.

    Returns:
        ``[N, L * F]`` features, level-major, equal to :func:`hash_encode_ref` up to float rounding.
    """
    F = spec.n_features
    table = params.view(-1, F)
    feats = []
    for level in range(spec.n_levels):
        pos = x * spec.scales[level] + 0.5  # [N, 3]
        fl = torch.floor(pos)
        frac = pos - fl
        base = fl.to(torch.int64)
        size = spec.sizes[level]
        if spec.is_dense(level):
            r = spec.resolutions[level]
            ix, wx = _axis_terms(base, frac, 0, 1)
            iy, wy = _axis_terms(base, frac, 1, r)
            iz, wz = _axis_terms(base, frac, 2, r * r)
            idx = iz[:, :, None, None] + iy[:, None, :, None] + ix[:, None, None, :]  # [N, 2, 2, 2]
            idx = torch.remainder(idx, size)
        else:
            ix, wx = _axis_terms(base, frac, 0, PRIMES[0])
            iy, wy = _axis_terms(base, frac, 1, PRIMES[1])
            iz, wz = _axis_terms(base, frac, 2, PRIMES[2])
            idx = torch.bitwise_xor(torch.bitwise_xor(iz[:, :, None, None], iy[:, None, :, None]),
                                    ix[:, None, None, :])
            idx = torch.bitwise_and(idx, 0xFFFFFFFF)
            idx = torch.bitwise_and(idx, size - 1) if size & (size - 1) == 0 else torch.remainder(idx, size)
        w = wz[:, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]  # [N, 2, 2, 2] (z, y, x)
        rows = torch.index_select(table, 0, (idx + spec.offsets[level]).reshape(-1)).view(-1, 8, F)  # [N, 8, F]
        feats.append((w.reshape(-1, 8, 1) * rows).sum(1))  # [N, F]
    return torch.cat(feats, dim=-1)
