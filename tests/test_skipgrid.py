"""The empty-space grid: cover, dilation guarantee, packed lookup, and the same test in torch, the
runtime's numpy, the training filter and the page's JS."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import UserError
from core.skipgrid import (
    cover_grid,
    dilate_grid,
    dilation_radius,
    pack_bits,
    pack_grid,
    points_occupied,
    unpack_grid,
)
from export.runtime import occupancy_cells, rays_cross_cells, rays_meet_box
from student.data import ContentRays
from student.encoding import RayEncoder
from testing.cli import run_js


def _random_cells(gen: torch.Generator, G: int, fraction: float) -> torch.Tensor:
    return torch.rand(G, G, G, generator=gen) < fraction


def test_cover_grid_covers_every_occupied_cell_and_little_else() -> None:
    gen = torch.Generator().manual_seed(0)
    R, G = 24, 10
    fine = _random_cells(gen, R, 0.02)
    aabb = torch.tensor([-1.5, -1.0, -2.0, 1.5, 2.0, 1.0])
    box = torch.tensor([-1.0, -0.8, -1.5, 1.2, 1.6, 0.7])  # inside aabb, cells not aligned
    cover = cover_grid(fine.reshape(-1), aabb, box, G)
    # every point of an occupied fine cell inside the box lies in a set cover cell
    idx = fine.reshape(-1).nonzero()[:, 0]
    ijk = torch.stack([idx // (R * R), (idx // R) % R, idx % R], -1).float()
    cell = (aabb[3:] - aabb[:3]) / R
    pts = aabb[:3] + (ijk[:, None] + torch.rand(len(idx), 50, 3, generator=gen)) * cell  # [M, 50, 3]
    pts = pts.reshape(-1, 3)
    pts = pts[((pts > box[:3]) & (pts < box[3:])).all(-1)]
    assert pts.shape[0] > 1000
    c = ((pts - box[:3]) / (box[3:] - box[:3]) * G).floor().long()
    assert cover[c[:, 0], c[:, 1], c[:, 2]].all()
    # and a set cover cell overlaps an occupied fine cell (brute force, open intervals, small slack)
    lo_f, hi_f = aabb[:3] + ijk * cell, aabb[:3] + (ijk + 1) * cell
    gc = (box[3:] - box[:3]) / G
    for i, j, k in cover.nonzero().tolist():
        lo_c = box[:3] + torch.tensor([i, j, k]) * gc
        overlap = ((lo_f < lo_c + gc + 1e-3 * gc) & (hi_f > lo_c - 1e-3 * gc)).all(-1)
        assert overlap.any()
    assert 0.02 < cover.float().mean() < 0.9


@pytest.mark.parametrize(("G", "K"), [(16, 8), (32, 32), (64, 32), (24, 5)])
def test_dilated_grid_catches_every_ray_through_a_set_cell(G: int, K: int) -> None:
    """The guarantee the student relies on: a ray crossing a set cell of the undilated grid has one of
    its K bin-centre points in a set cell of the grid dilated by ``dilation_radius(G, K)``."""
    gen = torch.Generator().manual_seed(G + K)
    box = torch.tensor([-1.0, -0.5, -0.8, 1.2, 0.7, 0.9])
    cells = torch.zeros(G, G, G, dtype=torch.bool)
    chosen = torch.randint(0, G, (6, 3), generator=gen)  # a few isolated cells: the hardest case
    cells[chosen[:, 0], chosen[:, 1], chosen[:, 2]] = True
    enc = RayEncoder(box, 0.1, 20.0, n_points=K, n_freqs=0,
                     occupancy=dilate_grid(cells, dilation_radius(G, K)))
    # rays through a random point of a random set cell, from random directions outside the box
    n = 4000
    pick = chosen[torch.randint(0, 6, (n,), generator=gen)]
    extent = box[3:] - box[:3]
    target = box[:3] + (pick + torch.rand(n, 3, generator=gen)) / G * extent
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    rays_o = target - 6.0 * direction
    _, hit = enc.points(rays_o, direction)
    assert hit.all(), f"{(~hit).sum().item()} rays through a set cell were skipped"
    # and the undilated grid would have skipped some of them (the test can fail)
    if dilation_radius(G, K) > 0:
        tight = RayEncoder(box, 0.1, 20.0, n_points=K, n_freqs=0, occupancy=cells)
        assert not tight.points(rays_o, direction)[1].all()


def test_points_occupied_matches_a_plain_lookup() -> None:
    gen = torch.Generator().manual_seed(1)
    for G in (1, 7, 16):
        cells = _random_cells(gen, G, 0.3)
        unit = torch.rand(500, 6, 3, generator=gen) * 1.2 - 0.1  # some outside [0, 1]: clamped
        got = points_occupied(unit, pack_bits(cells), G)
        ijk = (unit * G).floor().long().clamp(0, G - 1)
        want = cells[ijk[..., 0], ijk[..., 1], ijk[..., 2]].any(-1)
        assert torch.equal(got, want)
        assert G == 1 or 0 < want.float().mean() < 1


def test_pack_round_trip_and_bad_records() -> None:
    cells = _random_cells(torch.Generator().manual_seed(2), 9, 0.4)
    record = json.loads(json.dumps(pack_grid(cells)))
    assert np.array_equal(unpack_grid(record, "x"), cells.numpy())
    assert np.array_equal(occupancy_cells(record), cells.numpy())
    bads = ({"resolution": 9}, {"resolution": 10, "bits": record["bits"]}, {"resolution": 9, "bits": "%%"})
    for bad in bads:
        with pytest.raises(UserError, match="meta.json"):
            unpack_grid(bad, "meta.json")
        with pytest.raises((ValueError, KeyError)):
            occupancy_cells(bad)


def _rays_at_box(gen: np.random.Generator, box: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    center, half = (box[:3] + box[3:]) / 2, (box[3:] - box[:3]) / 2
    o = center + gen.normal(size=(n, 3)) * 3
    d = center + half * gen.uniform(-1.3, 1.3, size=(n, 3)) - o
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return o.astype(np.float32), d.astype(np.float32)


def test_runtime_and_training_filter_agree_with_the_encoder() -> None:
    gen = np.random.default_rng(3)
    box = np.array([-1.0, -0.5, -0.8, 1.2, 0.7, 0.9], np.float32)
    G, K = 13, 6  # odd G: no bin centre on a cell boundary (see data_gen occupancy_resolution)
    cells = torch.from_numpy(gen.uniform(size=(G, G, G)) < 0.08)
    enc = RayEncoder(torch.tensor(box), 0.5, 9.0, n_points=K, n_freqs=0, occupancy=cells)
    o, d = _rays_at_box(gen, box, 6000)
    hit = enc.points(torch.from_numpy(o), torch.from_numpy(d))[1].numpy()
    assert 0.1 < hit.mean() < 0.9
    # the runtime's widened test never rejects a ray the graph evaluates, and rarely keeps another
    wide = rays_meet_box(o, d, box, 0.5, 9.0) & rays_cross_cells(o, d, box, 0.5, 9.0, K, cells.numpy())
    assert not (hit & ~wide).any() and (wide & ~hit).mean() < 0.01
    # the training filter keeps exactly the rays the encoder evaluates
    packed = torch.cat([torch.from_numpy(o), torch.from_numpy(d), torch.zeros(len(o), 3)], 1)
    kept = ContentRays.of(enc)(packed)
    assert torch.equal(kept[:, :6], packed[torch.from_numpy(hit)][:, :6])
    # in chunks (a real capture's photo rays do not fit at once): the same rows, in order
    chunked = dataclasses.replace(ContentRays.of(enc), chunk=577)(packed)
    assert torch.equal(chunked, kept)
    box_only = ContentRays(box.tolist(), 0.5, 9.0)
    assert torch.equal(dataclasses.replace(box_only, chunk=577)(packed), box_only(packed))


def test_js_cells_test_matches_the_encoder(tmp_path: Path) -> None:
    gen = np.random.default_rng(4)
    box = np.array([-1.0, -0.5, -0.8, 1.2, 0.7, 0.9], np.float32)
    G, K = 11, 5
    cells = torch.from_numpy(gen.uniform(size=(G, G, G)) < 0.1)
    enc = RayEncoder(torch.tensor(box), 0.5, 9.0, n_points=K, n_freqs=0, occupancy=cells)
    o, d = _rays_at_box(gen, box, 1500)
    hit = enc.points(torch.from_numpy(o), torch.from_numpy(d))[1].numpy()
    data = tmp_path / "rays.json"
    data.write_text(json.dumps({"o": o.reshape(-1).tolist(), "d": d.reshape(-1).tolist(), "box": box.tolist(),
                                "cells": pack_grid(cells)}))
    got = run_js("import {decodeCells, raysCrossCells, raysMeetBox} from './camera.js';"
                  "import fs from 'fs';"
                  f"const x = JSON.parse(fs.readFileSync({json.dumps(str(data))}, 'utf8'));"
                  "const o = new Float32Array(x.o), d = new Float32Array(x.d), box = x.box;"
                  "const cells = decodeCells(x.cells);"
                  "const exact = raysCrossCells(o, d, raysMeetBox(o, d, box, 0.5, 9.0, 0), box, 0.5, 9.0, "
                  f"{K}, cells, 0);"
                  "const wide = raysCrossCells(o, d, raysMeetBox(o, d, box, 0.5, 9.0), box, 0.5, 9.0, "
                  f"{K}, cells, 1e-3);"
                  "console.log(JSON.stringify({exact: Array.from(exact), wide: Array.from(wide)}))")
    exact, wide = np.array(got["exact"], bool), np.array(got["wide"], bool)
    assert 0.1 < hit.mean() < 0.9
    assert (exact != hit).sum() <= 2  # float64 in the page, float32 in the graph: boundary cases only
    assert not (hit & ~wide).any()
