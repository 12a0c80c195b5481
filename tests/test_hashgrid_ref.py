"""The pure-PyTorch hash grid reference against tiny-cuda-nn's layout formulas and a dense grid."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from cuda.backend import HashGridConfig
from cuda.hashgrid_ref import PRIMES, HashGridSpec, grid_index_ref, hash_encode_ref

INSTANT_NGP_CFG = HashGridConfig()  # the paper's grid
INSTANT_NGP = INSTANT_NGP_CFG.spec()


def _tcnn_layout(n_levels: int, log2_t: int, base: int, per_level_scale: float) -> list[tuple[int, int]]:
    """(resolution, entries) per level, written from tiny-cuda-nn's grid.h in float32 like the kernel.

    scale = exp2f(l * log2(b)) * N_min - 1; R = ceil(scale) + 1; entries = min(next_multiple(R^3, 8), T).
    """
    out = []
    log2_b = np.float32(math.log2(per_level_scale))
    for level in range(n_levels):
        scale = np.exp2(np.float32(level) * log2_b, dtype=np.float32) * np.float32(base) - np.float32(1.0)
        res = int(np.ceil(scale)) + 1
        entries = min(-(-res**3 // 8) * 8, 2**log2_t)
        out.append((res, entries))
    return out


def test_default_layout_matches_tiny_cuda_nn() -> None:
    spec = INSTANT_NGP
    assert spec.per_level_scale == pytest.approx(2 ** (7 / 15))  # (2048 / 16) ** (1 / 15)
    layout = _tcnn_layout(16, 19, 16, spec.per_level_scale)
    assert list(spec.resolutions) == [r for r, _ in layout]
    assert list(spec.sizes) == [e for _, e in layout]
    assert list(spec.offsets) == [0, *np.cumsum([e for _, e in layout]).tolist()]
    # by hand: dense levels R = 16, 23, 31, 43, 59 (R^3 padded to 8), then 11 hashed levels of 2^19
    assert spec.resolutions[:6] == (16, 23, 31, 43, 59, 81)
    assert spec.sizes[:5] == (4096, 12168, 29792, 79512, 205384)
    assert [spec.is_dense(level) for level in range(16)] == [True] * 5 + [False] * 11
    assert spec.n_params == 2 * (4096 + 12168 + 29792 + 79512 + 205384 + 11 * 2**19) == 12196240
    assert spec.n_output_dims == 32
    assert spec.tcnn_config()["per_level_scale"] == spec.per_level_scale


@pytest.mark.parametrize(("levels", "log2_t", "base", "max_res"), [(8, 14, 4, 256), (12, 17, 8, 1024)])
def test_other_layouts_match_tiny_cuda_nn(levels: int, log2_t: int, base: int, max_res: int) -> None:
    spec = HashGridSpec(n_levels=levels, n_features=4, log2_hashmap_size=log2_t, base_resolution=base,
                        max_resolution=max_res)
    layout = _tcnn_layout(levels, log2_t, base, spec.per_level_scale)
    assert list(zip(spec.resolutions, spec.sizes)) == layout
    assert spec.n_params == 4 * sum(e for _, e in layout)


def test_invalid_spec_rejected() -> None:
    with pytest.raises(ValueError, match="log2_hashmap_size=40"):
        replace(INSTANT_NGP_CFG, log2_hashmap_size=40).spec()
    with pytest.raises(ValueError, match="n_levels=0"):
        replace(INSTANT_NGP_CFG, n_levels=0).spec()


def _xor_prime_hash(i: int, j: int, k: int, size: int) -> int:
    """The spatial hash in plain Python integers with explicit uint32 wrap-around."""
    m = 2**32
    return (((i * 1) % m) ^ ((j * 2654435761) % m) ^ ((k * 805459861) % m)) % size


def test_hashed_index_is_xor_prime_hash() -> None:
    assert PRIMES == (1, 2654435761, 805459861)
    spec = INSTANT_NGP
    level = 10
    assert not spec.is_dense(level)
    corners = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (3, 5, 7), (2047, 2048, 1999), (1234, 1, 4321)]
    got = grid_index_ref(torch.tensor(corners), spec, level).tolist()
    assert got == [_xor_prime_hash(*c, 2**19) for c in corners]
    # two values worked by hand: (0,1,0) -> 2654435761 mod 2^19; (1,1,0) -> (1 xor 2654435761) mod 2^19
    assert got[2] == 2654435761 % 2**19 == 0x779B1  # low 19 bits of 0x9E3779B1
    assert grid_index_ref(torch.tensor([1, 1, 0]), spec, level).item() == (1 ^ 2654435761) % 2**19


def test_dense_index_is_row_major() -> None:
    spec = INSTANT_NGP
    r = spec.resolutions[2]  # 31
    corners = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [30, 30, 30], [31, 0, 0]])
    got = grid_index_ref(corners, spec, 2).tolist()
    expected = [0, 1, r, r * r, 30 + 30 * r + 30 * r * r, 31 % spec.sizes[2]]
    assert got == expected


def _tiny_spec() -> HashGridSpec:
    # level 0: R = 4, dense (64 <= 2^7); level 1: R = 8 or more, hashed into 128 entries
    return HashGridSpec(n_levels=2, n_features=2, log2_hashmap_size=7, base_resolution=4, max_resolution=8)


def test_coarse_dense_level_is_trilinear_interpolation() -> None:
    spec = HashGridSpec(n_levels=3, n_features=3, log2_hashmap_size=12, base_resolution=5, max_resolution=14)
    assert spec.is_dense(0) and spec.is_dense(1)
    params = torch.randn(spec.n_params, dtype=torch.float64)
    F = spec.n_features
    for level in (0, 1):
        R, s = spec.resolutions[level], spec.scales[level]
        # keep every corner inside the grid: p = s x + 0.5 in [0, R - 1]
        x = torch.rand(500, 3, dtype=torch.float64) * ((R - 1.5) / s)
        feats = hash_encode_ref(x, params, spec)[:, level * F : (level + 1) * F]
        table = params.view(-1, F)[spec.offsets[level] : spec.offsets[level] + R**3]
        grid = table.T.reshape(1, F, R, R, R)  # [1, F, D=k, H=j, W=i]: entry i + j R + k R^2
        p = x * s + 0.5
        g = (2 * p / (R - 1) - 1).view(1, 1, 1, -1, 3)  # grid_sample wants (x=i, y=j, z=k)
        ref = torch.nn.functional.grid_sample(grid, g, mode="bilinear", align_corners=True)
        ref = ref.view(F, -1).T
        assert torch.allclose(feats, ref, rtol=1e-10, atol=1e-12)


def test_vertex_reads_one_hashed_entry() -> None:
    """At a grid vertex of a hashed level, the feature is exactly the entry the hash names."""
    spec = INSTANT_NGP
    level = 12
    params = torch.randn(spec.n_params, dtype=torch.float64)
    corner = (517, 33, 901)
    s = spec.scales[level]
    x = ((torch.tensor(corner, dtype=torch.float64) - 0.5) / s)[None]  # p = s x + 0.5 lands on the vertex
    feats = hash_encode_ref(x, params, spec)[0, 2 * level : 2 * level + 2]
    idx = spec.offsets[level] + _xor_prime_hash(*corner, spec.sizes[level])
    assert torch.allclose(feats, params.view(-1, 2)[idx], atol=1e-9)


def _away_from_cell_boundaries(spec: HashGridSpec, n: int, margin: float = 0.1) -> torch.Tensor:
    x = torch.rand(n * 50, 3, dtype=torch.float64)
    ok = torch.ones(x.shape[0], dtype=torch.bool)
    for s in spec.scales:
        frac = torch.frac(x * s + 0.5)
        ok &= ((frac > margin) & (frac < 1 - margin)).all(-1)
    assert int(ok.sum()) >= n
    return x[ok][:n]


def test_gradcheck_params_and_positions() -> None:
    spec = _tiny_spec()
    assert spec.is_dense(0) and not spec.is_dense(1)
    params = torch.randn(spec.n_params, dtype=torch.float64, requires_grad=True)
    x = _away_from_cell_boundaries(spec, 6).requires_grad_()
    assert torch.autograd.gradcheck(lambda p, q: hash_encode_ref(q, p, spec), (params, x))


def test_output_shape_and_float32() -> None:
    spec = _tiny_spec()
    params = torch.randn(spec.n_params)
    out = hash_encode_ref(torch.rand(10, 3), params, spec)
    assert out.shape == (10, spec.n_output_dims) and out.dtype == torch.float32
