"""Ray batches for the student: streamed from pseudo-data shards (distill) or from the real photos.

Shards are read with ``webdataset``: each DataLoader worker (of each DDP rank) reads a disjoint subset
of the shards, decodes whole views, turns them into rays and mixes rays of many views through a
shuffle buffer before cutting batches of ``B`` rays, so a batch never comes from one view.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
import webdataset as wds
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from core.errors import UserError
from core.rays import generate_rays, ray_aabb_intersect
from core.shards import PseudoMeta, decode_optional, decode_sample
from scenes.load import Scene
from student.encoding import RayEncoder, ray_segment, segment_occupied
from training.distributed import rank_and_world

log = logging.getLogger(__name__)

RayBatch = dict[str, Tensor]  # rays_o [B, 3], rays_d [B, 3], rgb [B, 3]


def ignore_unclosed_file_warnings() -> None:
    """webdataset 1.0.2 leaves each shard's file object to the garbage collector; silence that one."""
    warnings.filterwarnings("ignore", message=r"unclosed file", category=ResourceWarning)


def view_to_rays(rgb: Tensor, c2w: Tensor, K: Tensor) -> Tensor:
    """All rays of one view packed as rows ``[o(3), d(3), rgb(3)]``.

    Args:
        rgb: ``[H, W, 3]`` colors.
        c2w: ``[4, 4]`` pose (OpenCV convention).
        K: ``[3, 3]`` intrinsics.

    Returns:
        ``[H*W, 9]`` float32.
    """
    H, W = rgb.shape[:2]
    rays_o, rays_d = generate_rays(c2w, K, H, W)
    return torch.cat([rays_o, rays_d, rgb.reshape(-1, 3)], dim=-1)


def unpack_rays(packed: Tensor) -> RayBatch:
    """``[B, 9]`` packed rays -> ``{"rays_o", "rays_d", "rgb"}`` (each ``[B, 3]``)."""
    return {"rays_o": packed[:, 0:3], "rays_d": packed[:, 3:6], "rgb": packed[:, 6:9]}


def shuffled_ray_batches(
    chunks: Iterable[Tensor], batch_size: int, buffer_size: int, generator: torch.Generator
) -> Iterator[Tensor]:
    """Mix rays of consecutive chunks (views) through a buffer and cut batches of ``batch_size``.

    Each incoming chunk joins the buffer, the union is permuted once, and whole batches are cut from it
    while at least ``buffer_size`` rays stay behind, so a batch is a uniform draw from about
    ``buffer_size / rays_per_view`` views, each ray is emitted exactly once per pass, and the cost is one
    permutation per chunk (not per batch). The remainder is flushed, shuffled, at the end.

    Args:
        chunks: stream of ``[n_i, 9]`` packed rays.
        batch_size: rays per emitted batch.
        buffer_size: rays kept back for mixing.
        generator: source of randomness.

    Yields:
        ``[batch_size, 9]`` packed rays (the last one may be shorter).
    """
    buf: Tensor | None = None
    for chunk in chunks:
        buf = chunk if buf is None else torch.cat([buf, chunk])
        n_out = (buf.shape[0] - buffer_size) // batch_size * batch_size
        if n_out <= 0:
            continue
        buf = buf[torch.randperm(buf.shape[0], generator=generator)]
        yield from buf[:n_out].split(batch_size)
        buf = buf[n_out:]
    if buf is not None and buf.shape[0]:
        yield from buf[torch.randperm(buf.shape[0], generator=generator)].split(batch_size)


@dataclass
class ContentRays:
    """Keeps the packed rays that meet the content box within ``[near, far]`` and, given the student's
    empty-space grid, cross one of its set cells (picklable for workers).

    The student shows the background on every other ray without evaluating its network, so training on
    them would be wasted work.

    Attributes:
        box: ``[6]`` content box.
        near: start of the ray range.
        far: end of the ray range.
        n_points: the student's ``K`` (with ``skip_bits``).
        skip_bits: the encoder's packed empty-space grid (:class:`student.encoding.RayEncoder`), or None.
        skip_resolution: its cells per axis.
        chunk: rays tested at once (the grid test's temporaries are ``K x 3`` values a ray: a real
            capture's 11M photo rays at once took over 20 GB).
    """

    box: list[float]  # [6]
    near: float
    far: float
    n_points: int = 0
    skip_bits: Tensor | None = None
    skip_resolution: int = 0
    chunk: int = 1 << 16

    @classmethod
    def of(cls, enc: RayEncoder) -> ContentRays:
        """The rays ``enc`` evaluates (a world-frame encoder sampling inside its box)."""
        grid = enc.skip_bits.cpu() if enc.skip_resolution else None
        return cls(enc.box.tolist(), enc.near, enc.far, enc.n_points, grid, enc.skip_resolution)

    def __call__(self, packed: Tensor) -> Tensor:
        """``[N, 9]`` packed rays -> the ``[M, 9]`` rows the student evaluates."""
        return packed[torch.cat([self.mask(part) for part in packed.split(self.chunk)])]

    def mask(self, packed: Tensor) -> Tensor:
        """``[N]`` bool: which of the ``[N, 9]`` packed rays the student evaluates (all at once)."""
        box = torch.tensor(self.box, dtype=packed.dtype)
        rays_o, rays_d = packed[:, 0:3], packed[:, 3:6]
        if self.skip_bits is None:
            return ray_aabb_intersect(rays_o, rays_d, box, self.near, self.far)[2]
        start, span, hit = ray_segment(rays_o, rays_d, box, self.near, self.far, clip_to_box=True)
        center, half = (box[:3] + box[3:]) / 2, (box[3:] - box[:3]) / 2
        hit &= segment_occupied((start - center) / half, span / half, self.n_points, self.skip_bits,
                                self.skip_resolution)
        return hit


class _RaysFromViews:
    """webdataset pipeline stage: raw samples -> shuffled packed ray batches (picklable for workers)."""

    def __init__(self, batch_size: int, buffer_size: int, seed: int, keep: ContentRays | None = None):
        self.batch_size, self.buffer_size, self.seed, self.keep = batch_size, buffer_size, seed, keep
        self.passes = 0

    def __call__(self, samples: Iterable[dict[str, Any]]) -> Iterator[Tensor]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        rank, _ = rank_and_world()
        gen = torch.Generator().manual_seed(hash((self.seed, rank, worker, self.passes)) % (2**62))
        self.passes += 1

        def views() -> Iterator[Tensor]:
            for sample in samples:
                rgb, c2w, K = (torch.from_numpy(np.ascontiguousarray(a)) for a in decode_sample(sample))
                rays = view_to_rays(rgb, c2w, K)
                yield rays if self.keep is None else self.keep(rays)

        yield from shuffled_ray_batches(views(), self.batch_size, self.buffer_size, gen)


def shard_loader(meta: PseudoMeta, batch_size: int, buffer_size: int, num_workers: int, seed: int,
                 world_size: int = 1, content_only: bool = True, keep: ContentRays | None = None
                 ) -> DataLoader:
    """An endless DataLoader of shuffled ray batches from the shards of ``meta``.

    With ``content_only``, only rays that meet ``meta.scene.content_aabb`` (:class:`ContentRays`), or those
    ``keep`` keeps when given (the student's own test: :meth:`ContentRays.of`).

    Each rank reads ``shards[rank::world_size]`` (``webdataset.split_by_node``) and each of its workers
    a disjoint slice of those; the stream repeats (``with_epoch``), one epoch being about one pass over
    the pseudo-data for all ranks and workers together.

    Raises:
        UserError: fewer shards than DDP processes.
    """
    urls = [str(p) for p in meta.shard_paths()]
    if len(urls) < world_size:
        raise UserError(f"{meta.folder}: {len(urls)} shard(s) cannot feed {world_size} processes; "
                        "write more shards (data_gen views_per_shard) or use fewer devices")
    # A worker without a shard would end its stream at once ("No samples found"): never start one.
    workers = max(0, min(num_workers, len(urls) // world_size))
    streams = world_size * max(workers, 1)
    per_stream = max(1, math.ceil(meta.n_rays / (batch_size * streams)))
    ignore_unclosed_file_warnings()
    dataset = (
        wds.WebDataset(urls, shardshuffle=len(urls), nodesplitter=wds.split_by_node,
                       workersplitter=wds.split_by_worker, empty_check=False, seed=seed)
        .compose(_RaysFromViews(batch_size, buffer_size, seed,
                                keep or _content_filter(meta, content_only)))
        .map(unpack_rays)
        .with_epoch(per_stream)
    )
    return DataLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=workers > 0,
                      worker_init_fn=lambda _: ignore_unclosed_file_warnings())


def _every_shard(urls: Iterable[str]) -> Iterable[str]:
    return urls


def _content_filter(meta: PseudoMeta, content_only: bool) -> ContentRays | None:
    """The filter of rays that meet the content box (None: keep all; a forward-facing scene has no misses)."""
    if not content_only or meta.scene.ndc is not None:
        return None
    return ContentRays(meta.scene.content_aabb, meta.scene.near, meta.scene.far)


def load_shard_rays(meta: PseudoMeta, content_only: bool = True, keep: ContentRays | None = None) -> Tensor:
    """Every ray of the shards of ``meta`` (those meeting its content box), read once, packed ``[N, 9]``.

    The shards are read with ``webdataset`` in their order, decoded and turned into rays exactly as the
    streaming loader does (:func:`shard_loader`), so the two hold the same rays.
    """
    keep = keep or _content_filter(meta, content_only)
    views = []
    for rgb, c2w, K in shard_views(meta):
        rays = view_to_rays(rgb, c2w, K)
        views.append(rays if keep is None else keep(rays))
    return torch.cat(views)


def shard_views(meta: PseudoMeta) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Every view of the shards of ``meta``, in their order: ``rgb [H, W, 3]`` float32, ``c2w [4, 4]``,
    ``K [3, 3]`` (:func:`core.shards.decode_sample`).

    Every DDP rank reads all of them (each draws its own batches): no node splitting here.

    Raises:
        UserError: the shards hold no samples.
    """
    for rgb, c2w, K, _ in shard_views_with(meta, ()):
        yield rgb, c2w, K


def shard_views_with(meta: PseudoMeta, optional: Sequence[str]
                     ) -> Iterator[tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]]:
    """:func:`shard_views`, each view with its ``optional`` fields (``depth``, ``alpha``: ``[H, W]``
    float32, :func:`core.shards.decode_optional`) that the sample has."""
    ignore_unclosed_file_warnings()
    urls = [str(p) for p in meta.shard_paths()]
    found = False
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=_every_shard):
        found = True
        rgb, c2w, K = (torch.from_numpy(np.ascontiguousarray(a)) for a in decode_sample(sample))
        extra = {name: torch.from_numpy(a) for name in optional
                 if (a := decode_optional(sample, name)) is not None}
        yield rgb, c2w, K, extra
    if not found:
        raise UserError(f"{meta.folder}: the shards hold no samples")


def ray_bytes(meta: PseudoMeta) -> int:
    """Bytes of all the rays of ``meta`` packed as float32 ``[N, 9]`` (an upper bound of the cache)."""
    return meta.n_rays * 9 * 4


class InMemoryRays(IterableDataset):
    """Random batches (without replacement within a pass) from rays held in memory.

    Args:
        packed: ``[N, 9]`` packed rays.
        batch_size: rays per batch.
        seed: shuffling seed (varied by DDP rank; each rank reads its own slice of every permutation).
        steps_per_epoch: batches per epoch (``null``: one pass over the rays for all ranks together).
    """

    def __init__(self, packed: Tensor, batch_size: int, seed: int, steps_per_epoch: int | None = None):
        self.packed, self.batch_size, self.seed = packed, batch_size, seed
        _, world = rank_and_world()
        self.steps = steps_per_epoch or max(1, packed.shape[0] // (batch_size * world))
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[RayBatch]:
        rank, world = rank_and_world()
        gen = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        self.epoch += 1
        n = self.packed.shape[0]
        order = torch.randperm(n, generator=gen)
        n_batches = max(1, n // self.batch_size)
        for i in range(self.steps):
            j = (i * world + rank) % n_batches
            yield unpack_rays(self.packed[order[j * self.batch_size:(j + 1) * self.batch_size]])


def photo_rays(scene: Scene, background: list[float], split: str = "train", keep: ContentRays | None = None
               ) -> Tensor:
    """Rays of a split's photos (those ``keep`` keeps), composited on ``background``, packed ``[M, 9]``."""
    views = scene.split(split)
    rgb = views.rgb(background)
    rays = torch.cat([view_to_rays(rgb[i], views.c2w[i], views.K[i]) for i in range(views.n_views)])
    return rays if keep is None else keep(rays)


class ShardDataModule(L.LightningDataModule):
    """The ``distill`` stage's data: endless shuffled ray batches from the pseudo-data shards.

    With ``cache``, the shards are read once into memory (:func:`load_shard_rays`) and batches are
    uniform draws over all of their rays (no per-pass decoding: on a 2-core machine the decoding workers
    compete with training for the cores); else they are streamed (:func:`shard_loader`).
    """

    def __init__(self, meta: PseudoMeta, batch_size: int, buffer_size: int, num_workers: int, seed: int,
                 val_batches: list[RayBatch], cache: bool = False, keep: ContentRays | None = None):
        super().__init__()
        self.keep = keep  # the rays the student evaluates (None: those meeting the content box)
        self.meta, self.batch_size, self.buffer_size = meta, batch_size, buffer_size
        self.num_workers, self.seed, self.val_batches, self.cache = num_workers, seed, val_batches, cache
        # with_epoch gives each worker the same length; Lightning's generic caution does not apply
        warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")

    def train_dataloader(self) -> DataLoader:
        if self.cache:
            rays = load_shard_rays(self.meta, keep=self.keep)
            log.info("distill: %d pseudo-rays held in memory (%.0f MB)", rays.shape[0], rays.nbytes / 1e6)
            return DataLoader(InMemoryRays(rays, self.batch_size, self.seed), batch_size=None)
        return shard_loader(self.meta, self.batch_size, self.buffer_size, self.num_workers, self.seed,
                            world_size=rank_and_world()[1], keep=self.keep)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_batches, batch_size=None)  # type: ignore[arg-type]


class PhotoDataModule(L.LightningDataModule):
    """The ``finetune`` stage's data: random batches of rays of the real training photos."""

    def __init__(self, packed: Tensor, batch_size: int, seed: int, val_batches: list[RayBatch]):
        super().__init__()
        self.packed, self.batch_size, self.seed, self.val_batches = packed, batch_size, seed, val_batches

    def train_dataloader(self) -> DataLoader:
        return DataLoader(InMemoryRays(self.packed, self.batch_size, self.seed), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_batches, batch_size=None)  # type: ignore[arg-type]
