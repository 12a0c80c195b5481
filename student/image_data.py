"""Batches for the image student (``model.decoder=image``): random crops of whole views held in memory.

The image student draws an ``H x W`` view as ``ceil(H / s) x ceil(W / s)`` blocks of ``s x s`` pixels
(:class:`student.image_model.ImageStudent`). A training crop is a window of ``rows x cols`` of those blocks:
its target is the view's pixels under the window and its rays are the view's rays through the blocks'
centres, so the model's output pixels line up with the target pixels exactly. Each window is also moved by
a random ``0 .. s-1`` pixels (``train.crops.jitter``): a moved window is the whole-view render of a camera
whose principal point moved by a fraction of a block, so one view teaches ``s x s`` different ray maps
instead of one. A new camera sees the scene at any sub-block shift; without the jitter the decoder learns
the one shift of each pseudo-view (its pose), not the scene.

One forward pass draws the crops of several views at several places: the model takes one grid of block
centres for the whole batch (``centers [rows, cols, 2]``), so each crop's offset goes into its camera
instead, as a principal point moved by the offset (a crop of an image is the image of a camera whose
principal point moved to the crop's corner). The rays equal the full view's rays up to one rounding of
``c - offset``.

Two kinds of pixels of a window are left out of the loss (``mask``): those past the view's bottom and right
edges (the last blocks of a size not divisible by ``s`` are drawn and dropped, as in a whole-view render), and
a ``context`` of blocks along each side of the window that is not on the view's edge: the decoder's 3x3
convolutions read neighbouring blocks, which a window's border lacks (zero padding) and a whole-view
render has, so only the pixels inside the context see exactly what they see in a whole-view render.

Views are stored compactly: 8-bit pseudo-views (``rgb.png``) as ``uint8`` (3 bytes a pixel, decoded exactly
as :func:`core.shards.decode_rgb` does: 1000 views of 400x400 take 0.48 GB), other colors as ``float16``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from core.errors import UserError
from core.shards import PseudoMeta
from scenes.load import Scene
from student.config import CropConfig
from student.data import shard_views_with
from student.ray_map import block_centers
from training.distributed import rank_and_world

DEPTH_FIELDS = ("depth", "alpha")  # the pseudo-data's geometry, which supervises a detail head's depth
ViewBatch = dict[str, Tensor]  # c2w [B, 4, 4], K [B, 3, 3], rgb [B, h, w, 3] (+ centers, mask for crops)


@dataclass
class Views:
    """Whole views of one size in memory.

    Attributes:
        rgb: ``[V, H, W, 3]`` colors: ``uint8`` (value / 255) or ``float16``.
        c2w: ``[V, 4, 4]`` poses (OpenCV convention).
        K: ``[V, 3, 3]`` intrinsics in pixels.
        depth: ``[V, H, W]`` float16 the teacher's depth (distance along each pixel's unit ray), or
            ``None`` (photos, or pseudo-data without ``depth``/``alpha``).
        alpha: ``[V, H, W]`` uint8 the teacher's opacity x 255 where ``depth`` is given (the depth of a
            nearly transparent pixel means nothing).
    """

    rgb: Tensor
    c2w: Tensor
    K: Tensor
    depth: Tensor | None = None
    alpha: Tensor | None = None

    @property
    def n_views(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[2])

    def colors(self, view: int, y: slice, x: slice) -> Tensor:
        """``[h, w, 3]`` float32 colors of a region of one view."""
        part = self.rgb[view, y, x]
        return part.float() / 255 if part.dtype == torch.uint8 else part.float()


def pseudo_views(meta: PseudoMeta) -> Views:
    """Every pseudo-view of ``meta``, in shard order (``uint8`` colors for 8-bit shards).

    Raises:
        UserError: the shards hold no samples, or not the ``n_views`` views of ``meta.image_size`` that
            ``meta.json`` lists.
    """
    shape = (meta.n_views, meta.height, meta.width, 3)
    as_u8 = meta.rgb_format == "png"
    rgb = torch.empty(shape, dtype=torch.uint8 if as_u8 else torch.float16)
    c2w, K = torch.empty(meta.n_views, 4, 4), torch.empty(meta.n_views, 3, 3)
    geometry = all(name in meta.fields for name in DEPTH_FIELDS)
    depth = torch.empty(shape[:3], dtype=torch.float16) if geometry else None
    alpha = torch.empty(shape[:3], dtype=torch.uint8) if geometry else None
    n = 0
    for n, (color, pose, intr, extra) in enumerate(shard_views_with(meta, DEPTH_FIELDS if geometry else ()),
                                                   start=1):
        if n > meta.n_views or color.shape != shape[1:]:
            raise UserError(f"{meta.folder}/meta.json: lists {meta.n_views} views of {meta.height}x"
                            f"{meta.width}, but the shards hold view {n} of {tuple(color.shape[:2])}")
        rgb[n - 1] = (color * 255).round().to(torch.uint8) if as_u8 else color.to(torch.float16)
        c2w[n - 1], K[n - 1] = pose, intr
        if depth is not None and alpha is not None:
            if set(extra) != set(DEPTH_FIELDS) or extra["depth"].shape != shape[1:3]:
                raise UserError(f"{meta.folder}/meta.json: lists the fields {list(DEPTH_FIELDS)}, but view "
                                f"{n} has {sorted(extra)} or another size")
            depth[n - 1] = extra["depth"].to(torch.float16)
            alpha[n - 1] = (extra["alpha"].clamp(0, 1) * 255).round().to(torch.uint8)
    if n != meta.n_views:
        raise UserError(f"{meta.folder}/meta.json: lists {meta.n_views} views, the shards hold {n}")
    return Views(rgb, c2w, K, depth, alpha)


def photo_views(scene: Scene, background: list[float], split: str = "train") -> Views:
    """A split's photos composited on ``background`` (``float16`` colors)."""
    views = scene.split(split)
    return Views(views.rgb(background).to(torch.float16), views.c2w, views.K)


def validation_views(scene: Scene, background: list[float], n_views: int) -> list[ViewBatch]:
    """The first ``n_views`` test views, one whole view a batch (``c2w [1, 4, 4]``, ``K [1, 3, 3]``,
    ``rgb [1, H, W, 3]`` float32)."""
    views = scene.split("test")
    rgb = views.rgb(background)
    return [{"c2w": views.c2w[i:i + 1], "K": views.K[i:i + 1], "rgb": rgb[i:i + 1]}
            for i in range(min(n_views, views.n_views))]


@dataclass(frozen=True)
class CropGrid:
    """Where the crops of ``H x W`` views go on their grid of ``s x s`` blocks.

    Attributes:
        height: ``H``.
        width: ``W``.
        scale: ``s``.
        rows: crop height in blocks (at most the grid's).
        cols: crop width in blocks.
        context: blocks along each inner side of a crop left out of the loss.
        jitter: move each crop by a random fraction of a block (:meth:`draw`).
    """

    height: int
    width: int
    scale: int
    rows: int
    cols: int
    context: int
    jitter: bool

    @classmethod
    def of(cls, hw: tuple[int, int], scale: int, crops: CropConfig) -> CropGrid:
        """The crops ``crops`` asks for on views of size ``hw``, cut to the grid."""
        gh, gw = (math.ceil(n / scale) for n in hw)
        return cls(hw[0], hw[1], scale, min(crops.blocks, gh), min(crops.blocks, gw), crops.context,
                   crops.jitter)

    @property
    def blocks(self) -> tuple[int, int]:
        """``(ceil(H / s), ceil(W / s))``: the block grid of a whole view."""
        return math.ceil(self.height / self.scale), math.ceil(self.width / self.scale)

    def centers(self) -> Tensor:
        """``[rows, cols, 2]`` block centres of a crop in its own pixels (its camera's principal point
        moved by the offset: :func:`crop_batch`)."""
        return block_centers(self.rows, self.cols, self.scale)

    def draw(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` random crop offsets ``(top [n], left [n])`` in pixels.

        The block offset of each is drawn from a range wider than the grid's by half a crop at both ends
        and clamped, so that crops on the view's edges (the only ones that train the edge blocks) are
        common: with uniform offsets an edge block would be trained once per ``grid - crop + 1`` crops over
        the centre's. With ``jitter`` each then moves by a random ``0 .. s-1`` pixels: the crop is the
        whole-view render of a camera whose principal point moved by a fraction of a block, so the decoder
        learns the view at every sub-block shift (a new camera sees the scene at any) rather than at the
        one shift of the views' block grid.
        """
        (gh, gw), size, s = self.blocks, (self.rows, self.cols), self.scale
        out = []
        for grid, side in zip((gh, gw), size):
            span, half = grid - side, side // 2
            blocks = torch.randint(-half, span + half + 1, (n,), generator=generator).clamp(0, span)
            shift = torch.randint(0, s if self.jitter else 1, (n,), generator=generator)
            out.append(blocks * s + shift)
        return out[0], out[1]

    def mask(self, top: int, left: int) -> Tensor:
        """``[rows*s, cols*s]`` bool: the trained pixels of the crop at pixel offset ``(top, left)``: inside
        the view, outside the context of the sides not on the view's edge (a crop that starts in the first
        block row or column is the render of a camera whose edge it is; one that reaches the last is on
        the view's far edge)."""
        (gh, gw), s, c = self.blocks, self.scale, self.context
        r0 = c * s if top >= s else 0
        r1 = min((self.rows - c if top // s + self.rows < gh else self.rows) * s, self.height - top)
        c0 = c * s if left >= s else 0
        c1 = min((self.cols - c if left // s + self.cols < gw else self.cols) * s, self.width - left)
        mask = torch.zeros(self.rows * s, self.cols * s, dtype=torch.bool)
        mask[r0:r1, c0:c1] = True
        return mask


def crop_batch(views: Views, grid: CropGrid, index: Tensor, top: Tensor, left: Tensor) -> ViewBatch:
    """The crops of views ``index [B]`` at pixel offsets ``top [B]``, ``left [B]`` (:meth:`CropGrid.draw`).

    Returns:
        ``c2w [B, 4, 4]``; ``K [B, 3, 3]`` with the principal point moved by each crop's offset in pixels;
        ``centers [rows, cols, 2]`` (:meth:`CropGrid.centers`); ``rgb [B, rows*s, cols*s, 3]`` float32,
        the view's pixels (0 past its edges); ``mask [B, rows*s, cols*s]`` bool, the trained pixels;
        with the views' depth: ``depth [B, rows*s, cols*s]`` float32 and ``alpha`` (the same, in
        ``[0, 1]``; 0 past the edges).
    """
    h, w = grid.rows * grid.scale, grid.cols * grid.scale
    geometry = views.depth is not None and views.alpha is not None
    rgb = torch.zeros(len(index), h, w, 3)
    depth, alpha = torch.zeros(len(index), h, w), torch.zeros(len(index), h, w)
    masks = []
    for b, (i, t, lf) in enumerate(zip(index.tolist(), top.tolist(), left.tolist())):
        ys, xs = slice(t, t + h), slice(lf, lf + w)
        part = views.colors(i, ys, xs)
        rgb[b, :part.shape[0], :part.shape[1]] = part
        masks.append(grid.mask(t, lf))
        if views.depth is not None and views.alpha is not None:
            depth[b, :part.shape[0], :part.shape[1]] = views.depth[i, ys, xs].float()
            alpha[b, :part.shape[0], :part.shape[1]] = views.alpha[i, ys, xs].float() / 255
    K = views.K[index].clone()
    K[:, 0, 2] -= left.float()
    K[:, 1, 2] -= top.float()
    batch = {"c2w": views.c2w[index], "K": K, "centers": grid.centers(), "rgb": rgb,
             "mask": torch.stack(masks)}
    if geometry:
        batch.update(depth=depth, alpha=alpha)
    return batch


class RandomCrops(IterableDataset):
    """Random crops of random views, ``per_step`` a batch (:func:`crop_batch`), drawn with replacement.

    Args:
        views: the views.
        grid: the crops' size and context.
        per_step: crops per batch.
        seed: the stream's seed (varied by DDP rank and by epoch).
    """

    def __init__(self, views: Views, grid: CropGrid, per_step: int, seed: int):
        self.views, self.grid, self.per_step, self.seed = views, grid, per_step, seed
        gh, gw = grid.blocks
        per_view = math.ceil(gh * gw / (grid.rows * grid.cols))
        self.steps = max(1, views.n_views * per_view // per_step)  # an epoch: about each block once
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[ViewBatch]:
        rank, _ = rank_and_world()
        gen = torch.Generator().manual_seed(hash((self.seed, rank, self.epoch)) % (2**62))
        self.epoch += 1
        for _ in range(self.steps):
            index = torch.randint(0, self.views.n_views, (self.per_step,), generator=gen)
            top, left = self.grid.draw(self.per_step, gen)
            yield crop_batch(self.views, self.grid, index, top, left)


class CropDataModule(L.LightningDataModule):
    """One stage's data for the image student: random crops of the training views (pseudo-views or photos,
    loaded when training starts: a refused resume does not wait for them), whole test views for validation
    (:func:`validation_views`).

    Args:
        load: reads the training views (:func:`pseudo_views`, :func:`photo_views`).
        hw: their ``(H, W)``.
        crops: crop size, crops per step and context.
        scale: the student's ``s``.
        seed: the crop stream's seed.
        val_views: the validation batches.
    """

    def __init__(self, load: Callable[[], Views], hw: Sequence[int], crops: CropConfig, scale: int, seed: int,
                 val_views: list[ViewBatch]):
        super().__init__()
        self.load, self.crops, self.seed, self.val_views = load, crops, seed, val_views
        self.hw, self.scale = (int(hw[0]), int(hw[1])), scale

    def crop_grid(self) -> CropGrid:
        """Where the crops of the training views go."""
        return CropGrid.of(self.hw, self.scale, self.crops)

    def train_dataloader(self) -> DataLoader:
        views = self.load()
        assert views.hw == self.hw, (views.hw, self.hw)  # pseudo_views checks the shards against meta.json
        crops = RandomCrops(views, self.crop_grid(), self.crops.per_step, self.seed)
        return DataLoader(crops, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_views, batch_size=None)  # type: ignore[arg-type]
