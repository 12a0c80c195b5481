"""Student data: the cross-view shuffle buffer, the shard stream, in-memory batches."""

from __future__ import annotations

from pathlib import Path

import torch

from core.shards import read_meta
from student.data import InMemoryRays, shard_loader, shuffled_ray_batches, view_to_rays


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


def test_in_memory_batches_cover_all_rays_in_one_epoch() -> None:
    packed = torch.arange(1000, dtype=torch.float32)[:, None].repeat(1, 9)
    ds = InMemoryRays(packed, batch_size=100, seed=0)
    seen = torch.cat([b["rays_o"][:, 0] for b in ds])
    assert len(ds) == 10 and sorted(seen.tolist()) == list(range(1000))
