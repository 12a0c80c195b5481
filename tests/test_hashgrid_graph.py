"""The graph twin of the hash-grid lookup (what an exported student computes) against the reference."""

from __future__ import annotations

import pytest
import torch

from cuda.backend import HashGrid
from cuda.hashgrid_graph import _level_groups, hash_encode_graph
from cuda.hashgrid_ref import HashGridSpec, hash_encode_ref

SPECS = {
    "mixed": HashGridSpec(n_levels=4, n_features=2, log2_hashmap_size=14, base_resolution=8,
                          max_resolution=64),
    "dense only": HashGridSpec(n_levels=3, n_features=4, log2_hashmap_size=19, base_resolution=4,
                               max_resolution=32),
    "hashed only": HashGridSpec(n_levels=2, n_features=1, log2_hashmap_size=10, base_resolution=32,
                                max_resolution=64),
    "student default": HashGridSpec(n_levels=4, n_features=2, log2_hashmap_size=17, base_resolution=16,
                                    max_resolution=128),
}


def _points(n: int, gen: torch.Generator) -> torch.Tensor:
    """Random points plus the cube's corners, faces and edges (where corners wrap or clamp)."""
    x = torch.rand(n, 3, generator=gen)
    edges = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.5],
                          [1.0 - 1e-7, 1.0, 0.0], [0.5, 0.5, 1.0]])
    x[: len(edges)] = edges
    x[len(edges): 2 * len(edges), 0] = 1.0  # points on a face
    return x


@pytest.mark.parametrize("name", list(SPECS))
def test_graph_lookup_matches_reference(name: str) -> None:
    spec = SPECS[name]
    gen = torch.Generator().manual_seed(0)
    params = torch.randn(spec.n_params, generator=gen)
    x = _points(4000, gen)
    ref = hash_encode_ref(x, params, spec)
    out = hash_encode_graph(x, params, spec)
    assert out.shape == ref.shape == (4000, spec.n_output_dims)
    assert ref.abs().mean() > 0.1  # not a comparison of zeros
    assert (out - ref).abs().max() / ref.abs().max() < 1e-5


@pytest.mark.parametrize("name", ["mixed", "dense only"])
def test_graph_lookup_gradient_matches_reference(name: str) -> None:
    spec = SPECS[name]
    gen = torch.Generator().manual_seed(1)
    params = torch.randn(spec.n_params, generator=gen)
    x = _points(2000, gen)
    w = torch.randn(2000, spec.n_output_dims, generator=gen)
    grads = []
    for fn in (hash_encode_ref, hash_encode_graph):
        p = params.clone().requires_grad_(True)
        (fn(x, p, spec) * w).sum().backward()
        assert p.grad is not None
        grads.append(p.grad)
    assert grads[0].abs().max() > 0.1
    assert (grads[1] - grads[0]).abs().max() / grads[0].abs().max() < 1e-5


def test_levels_are_grouped_by_kind_in_order() -> None:
    spec = SPECS["mixed"]
    groups = _level_groups(spec)
    assert [lv for _, levels in groups for lv in levels] == list(range(spec.n_levels))
    assert [dense for dense, _ in groups] == [True, False]  # dense coarse levels, then hashed fine ones


def test_graph_backend_in_the_seam() -> None:
    spec = SPECS["mixed"]
    grid = HashGrid(spec, backend="graph")
    assert grid.backend == "graph"
    x = torch.rand(100, 3)
    assert torch.allclose(grid(x), hash_encode_ref(x, grid.params, spec), atol=1e-6)
