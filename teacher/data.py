"""Random ray batches from the training images (all rays precomputed, in memory).

Batch ``i`` is drawn with a generator seeded from ``(seed, i)``, so a resumed run continues the
exact sequence of batches: the data module stores the next batch index in Lightning checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from core.rays import generate_rays
from scenes.load import SceneSplit


def rays_with_pixels(split: SceneSplit) -> tuple[Tensor, Tensor, Tensor]:
    """All rays of a split with their pixels.

    Returns:
        ``rays_o [C*H*W, 3]``, ``rays_d [C*H*W, 3]``, ``rgba [C*H*W, 4]`` (straight alpha).
    """
    H, W = split.hw
    origins, dirs = [], []
    for c2w, K in zip(split.c2w, split.K):
        o, d = generate_rays(c2w, K, H, W)
        origins.append(o)
        dirs.append(d)
    return torch.cat(origins), torch.cat(dirs), split.images.reshape(-1, 4)


class RayBatches(IterableDataset):
    """Endless batches of ``batch_size`` random rays, batch ``i`` seeded by ``(seed, i)``."""

    def __init__(self, rays: tuple[Tensor, Tensor, Tensor], batch_size: int, seed: int):
        super().__init__()
        self.rays = rays
        self.batch_size = batch_size
        self.seed = seed
        self.start = 0

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        n = self.rays[0].shape[0]
        i = self.start
        gen = torch.Generator()
        while True:
            gen.manual_seed(self.seed * 1_000_003 + i)
            idx = torch.randint(0, n, (self.batch_size,), generator=gen)
            yield tuple(t[idx] for t in self.rays)  # type: ignore[misc]
            i += 1


class RayDataModule(L.LightningDataModule):
    """Serves :class:`RayBatches` of a training split; resumable through its ``state_dict``.

    Args:
        split: training views.
        batch_size: rays per batch.
        seed: base seed of the batch sequence.
    """

    def __init__(self, split: SceneSplit, batch_size: int, seed: int = 0):
        super().__init__()
        self.dataset = RayBatches(rays_with_pixels(split), batch_size, seed)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=None, num_workers=0)

    def state_dict(self) -> dict[str, Any]:
        # the trainer's step is the index of the next batch to consume
        return {"next_batch": int(self.trainer.global_step) if self.trainer else self.dataset.start}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.dataset.start = int(state_dict["next_batch"])
