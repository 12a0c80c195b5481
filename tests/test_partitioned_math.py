"""Spatial partition and segment compositing of the NeRF-XL teacher (single process, pure functions)."""

from __future__ import annotations

import pytest
import torch

from core.rays import ray_aabb_intersect
from core.rendering import accumulate_along_rays, render_weights_from_density
from teacher.xl.geometry import (
    crossing_order,
    median_split_boxes,
    ray_segments,
    region_of_points,
    sample_points_along_rays,
)
from teacher.xl.model import composite_records, substitute_own_record

AABB = torch.tensor([-1.0, -1.5, -0.5, 1.0, 1.5, 0.5], dtype=torch.float64)


def _random_rays(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    rays_o = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen, dtype=torch.float64), dim=-1) * 4
    target = (torch.rand(n, 3, generator=gen, dtype=torch.float64) - 0.5) * 1.5
    return rays_o, torch.nn.functional.normalize(target - rays_o, dim=-1)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7])
def test_median_split_balances_points_and_tiles_the_box(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    points = torch.randn(20000, 3, generator=gen, dtype=torch.float64) * torch.tensor([0.3, 0.6, 0.1])
    boxes = median_split_boxes(points, AABB, k)
    assert boxes.shape == (k, 6)
    # disjoint and covering: random points of the box fall in exactly one region (volumes sum up)
    volumes = (boxes[:, 3:] - boxes[:, :3]).prod(-1)
    torch.testing.assert_close(volumes.sum(), (AABB[3:] - AABB[:3]).prod(), rtol=1e-9, atol=0)
    probe = AABB[:3] + torch.rand(5000, 3, generator=gen, dtype=torch.float64) * (AABB[3:] - AABB[:3])
    inside = ((probe[:, None] > boxes[None, :, :3]) & (probe[:, None] < boxes[None, :, 3:])).all(-1)
    assert (inside.sum(1) == 1).all()
    region = region_of_points(points, boxes)
    kept = ((points >= AABB[:3]) & (points <= AABB[3:])).all(-1)
    assert ((region >= 0) == kept).all()
    counts = torch.bincount(region[kept], minlength=k).double()
    kept = kept.sum()
    assert (counts - kept / k).abs().max() <= 0.02 * kept / k + 2


def test_segments_of_a_ray_are_consecutive_and_cover_the_box() -> None:
    gen = torch.Generator().manual_seed(1)
    rays_o, rays_d = _random_rays(500, gen)
    boxes = median_split_boxes(sample_points_along_rays(rays_o, rays_d, AABB, 8, generator=gen), AABB, 5)
    t_in, t_out = ray_segments(rays_o, rays_d, boxes)
    order = crossing_order(t_in, t_out)
    s_in, s_out = torch.gather(t_in, 0, order), torch.gather(t_out, 0, order)
    hit = s_out > s_in

    t0, t1, box_hit = ray_aabb_intersect(rays_o, rays_d, AABB)
    lengths = ((s_out - s_in) * hit).sum(0)
    torch.testing.assert_close(lengths, (t1 - t0) * box_hit, rtol=1e-9, atol=1e-9)
    for n in range(rays_o.shape[0]):  # the exit of one segment is the entry of the next
        ins, outs = s_in[hit[:, n], n], s_out[hit[:, n], n]
        torch.testing.assert_close(ins[1:], outs[:-1], rtol=1e-9, atol=1e-9)


def _render_union(t_starts, t_ends, sigmas, rgbs, ray_indices, n):  # noqa: ANN001, ANN202
    weights, _, _ = render_weights_from_density(t_starts, t_ends, sigmas, ray_indices, n)
    rgb = accumulate_along_rays(weights, rgbs, ray_indices, n)
    depth = accumulate_along_rays(weights, ((t_starts + t_ends) / 2)[:, None], ray_indices, n)[:, 0]
    return rgb, depth, accumulate_along_rays(weights, None, ray_indices, n)[:, 0]


def _segment_records(t, sigmas, rgbs, region, k, n):  # noqa: ANN001, ANN202
    """Dense samples [N, P] split by region -> records [K, N, 5] (each region renders its own run)."""
    records = []
    for r in range(k):
        mask = region == r  # [N, P]
        sd = torch.where(mask, sigmas * (t[:, 1:] - t[:, :-1]), torch.zeros_like(sigmas))
        trans_in = torch.exp(-(torch.cumsum(sd, 1) - sd))
        w = trans_in * (1 - torch.exp(-sd))
        color = (w[..., None] * rgbs).sum(1)
        depth = (w * (t[:, 1:] + t[:, :-1]) / 2).sum(1)
        records.append(torch.cat([color, torch.exp(-sd.sum(1))[:, None], depth[:, None]], -1))
    return torch.stack(records)


def test_composite_records_equals_volume_rendering_of_the_union() -> None:
    gen = torch.Generator().manual_seed(2)
    n, p, k = 64, 40, 4
    rays_o, rays_d = _random_rays(n, gen)
    boxes = median_split_boxes(sample_points_along_rays(rays_o, rays_d, AABB, 8, generator=gen), AABB, k)
    t0, t1, _ = ray_aabb_intersect(rays_o, rays_d, AABB)
    t = t0[:, None] + (t1 - t0)[:, None] * torch.linspace(0, 1, p + 1, dtype=torch.float64)  # [N, P+1]
    mid = (t[:, 1:] + t[:, :-1]) / 2
    region = region_of_points((rays_o[:, None] + mid[..., None] * rays_d[:, None]).reshape(-1, 3), boxes)
    region = region.view(n, p)
    sigmas = torch.rand(n, p, generator=gen, dtype=torch.float64) * 3
    rgbs = torch.rand(n, p, 3, generator=gen, dtype=torch.float64)
    records = _segment_records(t, sigmas, rgbs, region, k, n)
    t_in, t_out = ray_segments(rays_o, rays_d, boxes)
    rgb, depth, opacity = composite_records(records, crossing_order(t_in, t_out))
    ray_indices = torch.arange(n).repeat_interleave(p)
    ref = _render_union(t[:, :-1].reshape(-1), t[:, 1:].reshape(-1), sigmas.reshape(-1), rgbs.reshape(-1, 3),
                        ray_indices, n)
    for got, want in zip((rgb, depth, opacity), ref):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_substituted_loss_gives_each_region_the_full_gradient() -> None:
    gen = torch.Generator().manual_seed(3)
    k, n = 4, 32
    base = torch.rand(k, n, 5, generator=gen, dtype=torch.float64)
    order = torch.stack([torch.randperm(k, generator=gen) for _ in range(n)], 1)
    target = torch.rand(n, 3, generator=gen, dtype=torch.float64)
    bg = torch.rand(3, generator=gen, dtype=torch.float64)

    def loss_of(records: torch.Tensor) -> torch.Tensor:
        rgb, depth, opacity = composite_records(records, order)
        return ((rgb + (1 - opacity)[:, None] * bg - target) ** 2).mean() + 0.1 * depth.square().mean()

    full = base.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(loss_of(full), full)
    for rank in range(k):
        own = base[rank].clone().requires_grad_(True)
        value = loss_of(substitute_own_record(base, own, rank))
        (got,) = torch.autograd.grad(value, own)
        torch.testing.assert_close(value, loss_of(base), rtol=1e-12, atol=0)
        torch.testing.assert_close(got, want[rank], rtol=1e-10, atol=1e-14)
        assert got.abs().max() > 0
