"""Student data: the cross-view shuffle buffer, the shard stream, in-memory batches."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from core.shards import read_meta
from student.data import (
    ContentRays,
    InMemoryRays,
    load_shard_rays,
    ray_bytes,
    shard_loader,
    shuffled_ray_batches,
    view_to_rays,
)


def _views(n_views: int, rays_per_view: int) -> list[torch.Tensor]:
    """Packed rays whose first column holds the view index and second a unique ray id."""
    out = []
    for v in range(n_views):
        chunk = torch.zeros(rays_per_view, 9)
        chunk[:, 0] = v
        chunk[:, 1] = torch.arange(rays_per_view) + v * rays_per_view
        out.append(chunk)
    return out


def test_shuffle_buffer_mixes_views_and_emits_every_ray_once() -> None:
    gen = torch.Generator().manual_seed(0)
    batches = list(shuffled_ray_batches(iter(_views(20, 100)), batch_size=64, buffer_size=400, generator=gen))
    ids = torch.cat([b[:, 1] for b in batches])
    assert sorted(ids.tolist()) == list(range(2000))
    assert all(b.shape[0] == 64 for b in batches[:-1])
    views_per_batch = [len(set(b[:, 0].tolist())) for b in batches[:-1]]
    assert min(views_per_batch) >= 3, views_per_batch  # the buffer holds rays of >= 4 views
    without = list(shuffled_ray_batches(iter(_views(20, 100)), 64, 0, gen))
    assert min(len(set(b[:, 0].tolist())) for b in without) == 1  # the test can tell the difference


def test_view_to_rays_packs_origin_direction_color() -> None:
    K = torch.tensor([[10.0, 0, 2], [0, 10.0, 2], [0, 0, 1]])
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    rgb = torch.rand(4, 4, 3)
    packed = view_to_rays(rgb, c2w, K)
    assert packed.shape == (16, 9)
    assert torch.allclose(packed[:, :3], torch.tensor([1.0, 2.0, 3.0]).expand(16, 3))
    assert torch.allclose(packed[:, 3:6].norm(dim=-1), torch.ones(16))
    assert torch.equal(packed[:, 6:], rgb.reshape(-1, 3))


def test_shard_stream_with_more_workers_than_shards(tiny_pseudo_run: Path) -> None:
    """3 shards, 4 workers asked: every batch is full-size and the stream repeats past one pass."""
    meta = read_meta(tiny_pseudo_run / "pseudo")
    loader = shard_loader(meta, batch_size=128, buffer_size=256, num_workers=4, seed=0)
    assert loader.num_workers == 3
    epochs = [list(loader) for _ in range(2)]
    per_epoch = 3 * -(-meta.n_rays // (128 * 3))  # with_epoch: the same count from every worker
    for batches in epochs:
        assert len(batches) == per_epoch
        assert {tuple(b["rays_o"].shape) for b in batches} == {(128, 3)}
        assert (torch.cat([b["rgb"] for b in batches]) < 1).any()


def _sorted_rows(packed: torch.Tensor) -> np.ndarray:
    arr = packed.numpy()
    return arr[np.lexsort(arr.T[::-1])]


def test_cached_shard_rays_are_the_streamed_rays(tiny_pseudo_run: Path) -> None:
    """The in-memory distill data holds exactly the rays one streamed pass yields (content box only)."""
    meta = read_meta(tiny_pseudo_run / "pseudo")
    cached = load_shard_rays(meta)
    assert 0 < cached.shape[0] <= meta.n_rays
    assert ray_bytes(meta) == meta.n_rays * 36 >= cached.nbytes
    loader = shard_loader(meta, batch_size=100, buffer_size=300, num_workers=0, seed=0)
    streamed: list[torch.Tensor] = []
    while sum(b.shape[0] for b in streamed) < cached.shape[0]:
        streamed += [torch.cat([b["rays_o"], b["rays_d"], b["rgb"]], -1) for b in loader]
    first_pass = torch.cat(streamed)[: cached.shape[0]]
    assert np.array_equal(_sorted_rows(first_pass), _sorted_rows(cached))
    assert not torch.equal(first_pass, cached)  # the stream is shuffled, the cache in shard order


def test_in_memory_batches_cover_all_rays_in_one_epoch() -> None:
    packed = torch.arange(1000, dtype=torch.float32)[:, None].repeat(1, 9)
    ds = InMemoryRays(packed, batch_size=100, seed=0)
    seen = torch.cat([b["rays_o"][:, 0] for b in ds])
    assert len(ds) == 10 and sorted(seen.tolist()) == list(range(1000))


def test_content_rays_keep_exactly_the_rays_that_meet_the_box() -> None:
    gen = torch.Generator().manual_seed(3)
    packed = torch.zeros(1000, 9)
    packed[:, 0:3] = torch.tensor([0.0, 0.0, -4.0]) + 0.1 * torch.randn(1000, 3, generator=gen)
    packed[:, 3:6] = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 1.0]) + 0.4 * torch.randn(
        1000, 3, generator=gen), dim=-1)
    packed[:, 6] = torch.arange(1000.0)
    kept = ContentRays([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], near=0.5, far=10.0)(packed)
    # reference: march each ray finely and see whether any point falls in the box
    t = torch.linspace(0.5, 10.0, 4000)
    pts = packed[:, None, 0:3] + t[None, :, None] * packed[:, None, 3:6]
    surely_in = (pts.abs() <= 0.99).all(-1).any(-1)  # a margin for grazing rays
    maybe_in = (pts.abs() <= 1.01).all(-1).any(-1)
    kept_ids = set(kept[:, 6].long().tolist())
    assert 100 < int(surely_in.sum()) < 900 and int((maybe_in & ~surely_in).sum()) < 20
    surely_ids, maybe_ids = (set(torch.nonzero(m)[:, 0].tolist()) for m in (surely_in, maybe_in))
    assert surely_ids <= kept_ids <= maybe_ids
    short = ContentRays([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], near=0.5, far=2.5)  # ends before the box
    assert short(packed).shape[0] == 0


def test_shard_stream_keeps_only_rays_of_the_content_box(tiny_pseudo_run: Path) -> None:
    meta = read_meta(tiny_pseudo_run / "pseudo")
    lo, hi = torch.tensor(meta.scene.aabb[:3]), torch.tensor(meta.scene.aabb[3:])
    center, half = (lo + hi) / 2, (hi - lo) / 2
    content = torch.cat([center - 0.3 * half, center + 0.3 * half]).tolist()
    meta.scene = dataclasses.replace(meta.scene, content_aabb=content)
    keep = ContentRays(content, meta.scene.near, meta.scene.far)
    for content_only in (True, False):
        batch = next(iter(shard_loader(meta, 64, 0, 0, seed=0, content_only=content_only)))
        packed = torch.cat([batch["rays_o"], batch["rays_d"], batch["rgb"]], dim=-1)
        assert (keep(packed).shape[0] == packed.shape[0]) == content_only
