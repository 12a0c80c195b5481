"""Ray marching, early termination, occupancy grid and segment rendering against dense references."""

from __future__ import annotations

import math

import torch

from core.rendering import composite_segments
from cuda.backend import HashGridConfig
from teacher.field import FieldConfig, TeacherField
from teacher.marching import early_termination_mask, march_rays
from teacher.occupancy import OccupancyConfig, OccupancyGrid, carve_from_masks, cell_indices
from teacher.render import MarchConfig, render_segment

AABB = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])


def _random_rays(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    rays_o = torch.randn(n, 3, generator=gen) * 0.3 + torch.tensor([0.0, 0.0, -2.5])
    target = torch.rand(n, 3, generator=gen) * 1.6 - 0.8
    return rays_o, torch.nn.functional.normalize(target - rays_o, dim=-1)


def _dense_reference(rays_o, rays_d, t_min, t_max, step, occ, offsets):
    """Per-ray Python loop: every step interval whose midpoint lies in an occupied cell."""
    R = round(occ.numel() ** (1 / 3))
    out = []
    for n in range(rays_o.shape[0]):
        t = float(t_min[n]) + float(offsets[n]) * step
        while t < float(t_max[n]) - 1e-7:
            end = min(t + step, float(t_max[n]))
            mid = rays_o[n] + 0.5 * (t + end) * rays_d[n]
            ijk = ((mid - AABB[:3]) / 2 * R).floor().long().clamp(0, R - 1)
            if occ.view(R, R, R)[ijk[0], ijk[1], ijk[2]]:
                out.append((n, t, end))
            t += step
    return out


def test_march_rays_matches_dense_reference() -> None:
    gen = torch.Generator().manual_seed(1)
    rays_o, rays_d = _random_rays(12, gen)
    t_min = torch.rand(12, generator=gen) + 1.0
    t_max = t_min + torch.rand(12, generator=gen) * 2.0
    t_max[3] = t_min[3]  # an empty interval
    occ = torch.rand(8**3, generator=gen) > 0.5
    offsets = torch.rand(12, generator=gen)
    samples = march_rays(rays_o, rays_d, t_min, t_max, 0.05, occ, AABB, offsets)
    ref = _dense_reference(rays_o, rays_d, t_min, t_max, 0.05, occ, offsets)
    assert len(ref) > 20 and samples.t_starts.numel() == len(ref)
    ref_t = torch.tensor(ref, dtype=torch.float64)
    assert samples.ray_indices.tolist() == ref_t[:, 0].long().tolist()
    torch.testing.assert_close(samples.t_starts.double(), ref_t[:, 1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(samples.t_ends.double(), ref_t[:, 2], rtol=1e-5, atol=1e-5)
    assert not bool((samples.ray_indices == 3).any())


def test_early_termination_matches_cumulative_product() -> None:
    gen = torch.Generator().manual_seed(2)
    rays_o, rays_d = _random_rays(6, gen)
    samples = march_rays(rays_o, rays_d, torch.full((6,), 1.0), torch.full((6,), 4.0), 0.1)
    sigmas = torch.rand(samples.t_starts.numel(), generator=gen) * 30
    keep = early_termination_mask(samples, sigmas, 6, min_transmittance=1e-3)
    for n in range(6):
        sel = samples.ray_indices == n
        alphas = 1 - torch.exp(-sigmas[sel] * (samples.t_ends[sel] - samples.t_starts[sel]))
        trans = torch.cumprod(torch.cat([torch.ones(1), 1 - alphas[:-1]]), 0)
        assert keep[sel].tolist() == (trans >= 1e-3).tolist()
    assert 0 < int(keep.sum()) < keep.numel()


def test_occupancy_update_follows_ema_rule() -> None:
    cfg = OccupancyConfig(resolution=4, decay=0.5, threshold=0.01, update_every=2, warmup_steps=4)
    grid = OccupancyGrid(cfg, AABB)
    assert bool(grid.binary.all())  # everything occupied before the first update

    def blob(x: torch.Tensor) -> torch.Tensor:  # opacity of a ball of radius 0.6 around the origin
        return (x.norm(dim=-1) < 0.6).float() * 0.3

    assert not grid.update(1, blob)  # not an update step
    assert grid.update(0, blob)  # warm-up: every cell measured at a random point in it
    first = grid.values.clone()
    centre = cell_indices(torch.zeros(1, 3) + 0.1, AABB, 4)
    corner = cell_indices(torch.full((1, 3), 0.9), AABB, 4)
    assert first[centre] == 0.3 and first[corner] == 0.0
    assert bool(grid.binary[centre]) and not bool(grid.binary[corner])
    grid.update(2, lambda x: torch.zeros(x.shape[0]))
    torch.testing.assert_close(grid.values, first * 0.5)  # EMA: max(decayed, measured)
    assert bool(grid.binary[centre])  # 0.15 > threshold
    for step in (4, 6, 8, 10, 12):  # after warm-up only a sample of cells is measured
        grid.update(step, lambda x: torch.zeros(x.shape[0]))
    torch.testing.assert_close(grid.values, first * 0.5**6)
    # below the 0.01 threshold now, the ball stays occupied only as "above the mean"
    assert torch.equal(grid.binary, grid.values > grid.values.mean())
    grid.update(14, lambda x: torch.full((x.shape[0],), 0.02))  # a sampled cell becomes occupied
    assert int(grid.binary.sum()) > int((first > 0).sum())


def test_carving_keeps_the_visual_hull() -> None:
    """Cameras around a ball: cells inside it survive, cells far from it are carved."""
    from core.cameras import focal_from_fov, intrinsics_matrix
    from core.rays import generate_rays
    from testing.scenes.rigs import ring_poses

    size, n = 24, 6
    K = intrinsics_matrix(*(2 * [focal_from_fov(0.69, size)]), size / 2, size / 2)
    poses = ring_poses(n)
    alphas = []
    for c2w in poses:
        o, d = generate_rays(c2w, K, size, size)
        b = (o * d).sum(-1)
        alphas.append(((b * b - (o * o).sum(-1) + 0.5**2) > 0).float().reshape(size, size))
    allowed = carve_from_masks(AABB * 1.5, 16, poses, K.expand(n, 3, 3), torch.stack(alphas), dilation=1)
    inside = cell_indices(torch.tensor([[0.0, 0.0, 0.0], [0.2, -0.2, 0.1]]), AABB * 1.5, 16)
    outside = cell_indices(torch.tensor([[1.4, 1.4, 0.0], [-1.3, 0.0, 1.3]]), AABB * 1.5, 16)
    assert bool(allowed[inside].all()) and not bool(allowed[outside].any())
    assert 0.01 < float(allowed.float().mean()) < 0.3
    # one wrong mask (empty in view 0) carves the ball away from a strict hull, not from a voted one
    wrong = torch.stack(alphas)
    wrong[0] = 0.0
    strict = carve_from_masks(AABB * 1.5, 16, poses, K.expand(n, 3, 3), wrong, dilation=1, min_views=1)
    voted = carve_from_masks(AABB * 1.5, 16, poses, K.expand(n, 3, 3), wrong, dilation=1, min_views=2)
    assert not bool(strict[inside].any()) and bool(voted[inside].all())
    assert not bool(voted[outside].any())


def _field() -> TeacherField:
    grid = HashGridConfig(n_levels=4, log2_hashmap_size=12, max_resolution=32, backend="torch")
    cfg = FieldConfig(grid=grid)
    field = TeacherField(cfg, AABB)
    with torch.no_grad():
        field.grid.params.uniform_(-2, 2)
    return field.eval()


def test_render_segment_matches_dense_quadrature() -> None:
    gen = torch.Generator().manual_seed(3)
    field = _field()
    rays_o, rays_d = _random_rays(5, gen)
    t_min, t_max = torch.full((5,), 1.5), torch.full((5,), 3.5)
    cfg = MarchConfig(min_transmittance=0.0)
    with torch.no_grad():
        seg = render_segment(field, rays_o, rays_d, t_min, t_max, None, 0.02, cfg)
        ts = torch.arange(100) * 0.02 + 1.5  # the same 100 intervals, dense [N, S] layout
        mids = rays_o[:, None] + (ts + 0.01)[None, :, None] * rays_d[:, None]
        sig, rgb = field(mids.reshape(-1, 3), rays_d[:, None].expand(5, 100, 3).reshape(-1, 3))
        alpha = 1 - torch.exp(-sig.reshape(5, 100) * 0.02)
        trans = torch.cumprod(torch.cat([torch.ones(5, 1), 1 - alpha[:, :-1]], 1), 1)
        w = trans * alpha
        expected = (w[..., None] * rgb.reshape(5, 100, 3)).sum(1)
    torch.testing.assert_close(seg["rgb"], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(seg["opacity"], w.sum(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(seg["trans"], 1 - w.sum(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(seg["depth_sum"], (w * (ts + 0.01)).sum(1), rtol=1e-4, atol=1e-5)
    assert float(seg["opacity"].min()) > 0.05  # the field is not empty: the test compares something


def test_two_segments_composite_to_the_whole_ray() -> None:
    """NeRF-XL: rendering [a, m] and [m, b] separately then compositing equals rendering [a, b]."""
    gen = torch.Generator().manual_seed(4)
    field = _field()
    rays_o, rays_d = _random_rays(7, gen)
    a, m, b = torch.full((7,), 1.5), torch.full((7,), 2.5), torch.full((7,), 3.5)
    cfg = MarchConfig(min_transmittance=0.0)
    with torch.no_grad():
        whole = render_segment(field, rays_o, rays_d, a, b, None, 0.02, cfg)
        parts = [render_segment(field, rays_o, rays_d, lo, hi, None, 0.02, cfg)
                 for lo, hi in ((a, m), (m, b))]
    rgb, trans = composite_segments(torch.stack([p["rgb"] for p in parts]),
                                    torch.stack([p["trans"] for p in parts]))
    torch.testing.assert_close(rgb, whole["rgb"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(trans, whole["trans"], rtol=1e-4, atol=1e-5)
    assert float(whole["opacity"].mean()) > 0.05 and math.isfinite(float(rgb.sum()))


def test_training_pass_keeps_only_contributing_samples() -> None:
    gen = torch.Generator().manual_seed(5)
    field = _field().train()
    with torch.no_grad():
        field.grid.params.mul_(3)  # dense enough that rays terminate early
    rays_o, rays_d = _random_rays(6, gen)
    t_min, t_max = torch.full((6,), 1.5), torch.full((6,), 3.5)
    cfg = MarchConfig(min_transmittance=0.5, jitter=False)
    seg = render_segment(field, rays_o, rays_d, t_min, t_max, None, 0.02, cfg)
    assert 0 < int(seg["n_samples"]) < 500  # fewer than the 6 x 100 marched
    with torch.no_grad():  # the one-pass inference path truncates the same samples
        once = render_segment(field.eval(), rays_o, rays_d, t_min, t_max, None, 0.02, cfg)
        full = render_segment(field, rays_o, rays_d, t_min, t_max, None, 0.02,
                              MarchConfig(min_transmittance=0))
    torch.testing.assert_close(seg["rgb"].detach(), once["rgb"], rtol=1e-5, atol=1e-6)
    assert int(once["n_samples"]) == int(seg["n_samples"])
    assert float((full["rgb"] - once["rgb"]).abs().max()) > 0
    field.train()
    seg["rgb"].sum().backward()
    assert field.grid.params.grad is not None and field.grid.params.grad.abs().sum() > 0


def test_dilate_occupancy_matches_max_pool() -> None:
    from teacher.marching import dilate_occupancy

    occ = torch.rand(9**3, generator=torch.Generator().manual_seed(6)) > 0.97
    ref = torch.nn.functional.max_pool3d(occ.view(1, 1, 9, 9, 9).float(), 3, stride=1, padding=1).view(-1) > 0
    got = dilate_occupancy(occ)
    assert torch.equal(got, ref) and int(occ.sum()) < int(got.sum()) < occ.numel()
