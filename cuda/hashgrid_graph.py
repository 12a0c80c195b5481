"""The hash-grid lookup written in graph-friendly PyTorch ops, for export (ONNX) and as a third twin.

Same layout and result as :func:`cuda.hashgrid_ref.hash_encode_ref`, but built from ops every ONNX
runtime has (``Floor``, ``Cast``, int64 ``Mul``/``Add``/``BitwiseXor``/``BitwiseAnd``/``Mod``,
``Gather``, ``ReduceProd``/``ReduceSum``), vectorised over the 8 corners (a constant ``[8, 3]`` of
corner offsets broadcast against each point's cell) and over the levels of one kind. Differentiable
in ``params`` (the lookup is a gather), so it also trains, slowly: training uses the compiled kernels
behind :class:`cuda.backend.HashGrid`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cuda.hashgrid_ref import PRIMES, HashGridSpec

_CORNERS = [[(c >> d) & 1 for d in range(3)] for c in range(8)]  # [8, 3]: corner c = x + 2 y + 4 z
DENSE_FLOAT_LIMIT = 2**24  # dense indices below this are exact in float32


def _level_groups(spec: HashGridSpec) -> list[tuple[bool, list[int]]]:
    """Consecutive levels of one kind (dense or hashed), in level order: each group is one set of ops."""
    groups: list[tuple[bool, list[int]]] = []
    for level in range(spec.n_levels):
        dense = spec.is_dense(level)
        if groups and groups[-1][0] == dense:
            groups[-1][1].append(level)
        else:
            groups.append((dense, [level]))
    return groups


def _group_features(x: Tensor, table: Tensor, spec: HashGridSpec, dense: bool, levels: list[int]) -> Tensor:
    """Features ``[N, len(levels) * F]`` of consecutive levels of one kind, all levels in one set of ops."""
    dev, G = x.device, len(levels)
    scales = torch.tensor([spec.scales[l] for l in levels], dtype=x.dtype, device=dev)  # [G]
    corners = torch.tensor(_CORNERS, dtype=x.dtype, device=dev)  # [8, 3]
    pos = x[:, None, :] * scales[:, None] + 0.5  # [N, G, 3]
    fl = torch.floor(pos)
    frac = pos - fl
    # trilinear weights: prod_d |1 - c_d - f_d| is f_d where c_d = 1 and 1 - f_d where c_d = 0
    w = torch.abs((1.0 - corners) - frac[:, :, None, :]).prod(-1)  # [N, G, 8]
    offsets = torch.tensor([spec.offsets[l] for l in levels], dtype=torch.int64, device=dev)[:, None]
    sizes = torch.tensor([spec.sizes[l] for l in levels], dtype=torch.int64, device=dev)[:, None]  # [G, 1]
    if dense:
        res = torch.tensor([float(spec.resolutions[l]) for l in levels], dtype=x.dtype, device=dev)
        strides = torch.stack([torch.ones_like(res), res, res * res], -1)  # [G, 3]
        if max(spec.sizes[l] for l in levels) < DENSE_FLOAT_LIMIT:
            # exact integers in float32: one dot product per point and level, the corners by broadcasting
            base = (fl * strides).sum(-1)  # [N, G]
            idx = (base[:, :, None] + (corners * strides[:, None, :]).sum(-1)).to(torch.int64)  # [N, G, 8]
        else:
            ci = fl.to(torch.int64)[:, :, None, :] + corners.to(torch.int64)  # [N, G, 8, 3]
            idx = (ci * strides.to(torch.int64)[:, None, :]).sum(-1)
        idx = torch.remainder(idx, sizes)
    else:
        primes = torch.tensor(PRIMES, dtype=torch.int64, device=dev)
        ci = (fl.to(torch.int64)[:, :, None, :] + corners.to(torch.int64)) * primes  # [N, G, 8, 3]
        idx = torch.bitwise_xor(torch.bitwise_xor(ci[..., 0], ci[..., 1]), ci[..., 2])  # [N, G, 8]
        pow2 = all(spec.sizes[l] & (spec.sizes[l] - 1) == 0 for l in levels)
        if pow2:
            idx = torch.bitwise_and(idx, sizes - 1)
        else:
            idx = torch.remainder(torch.bitwise_and(idx, 0xFFFFFFFF), sizes)
    rows = torch.index_select(table, 0, (idx + offsets).reshape(-1)).view(-1, G, 8, spec.n_features)
    return (rows * w[..., None]).sum(2).reshape(-1, G * spec.n_features)  # [N, G F]


def hash_encode_graph(x: Tensor, params: Tensor, spec: HashGridSpec) -> Tensor:
    """Encode points with the hash grid in export-friendly ops.

    Levels of one kind (the dense coarse ones, the hashed fine ones) are computed together, so the
    graph has two small sets of ops whatever the number of levels: an exported graph runs op by op over
    whole tensors, and fewer, larger ops are what make it fast. Dense indices are computed in float32
    where they are exact integers (below ``2^24``), hashed ones in int64 (the uint32 hash of the
    reference, masked to the power-of-two table size).

    Args:
        x: ``[N, 3]`` float32 points in ``[0, 1]^3``.
        params: ``[n_params]`` flat table in the layout of :class:`HashGridSpec`.
        spec: the grid's shape.

    Returns:
        ``[N, L * F]`` features, level-major, equal to :func:`hash_encode_ref` up to float rounding.
    """
    table = params.view(-1, spec.n_features)
    feats = [_group_features(x, table, spec, dense, levels) for dense, levels in _level_groups(spec)]
    return feats[0] if len(feats) == 1 else torch.cat(feats, dim=-1)
