"""R2L's hard-ray mining (on by default in distill): the pool keeps the worst rays and replays them."""

from __future__ import annotations

import torch

from student.config import HardMiningConfig
from student.lit_module import HardRayPool


def _batch(n: int, offset: int) -> dict[str, torch.Tensor]:
    ids = torch.arange(offset, offset + n, dtype=torch.float32)[:, None]
    return {"rays_o": ids.repeat(1, 3), "rays_d": -ids.repeat(1, 3), "rgb": ids.repeat(1, 3) / 1000}


def test_pool_keeps_the_highest_error_rays_and_replays_a_fraction() -> None:
    pool = HardRayPool(HardMiningConfig(enabled=True, fraction=0.25, pool_size=6))
    first = _batch(8, 0)
    assert pool.extend(first, 8) is first  # nothing to replay while the pool is empty
    loss = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.0, 0.3, 0.05, 0.7])
    pool.update(first, loss)
    assert pool.pool is not None and sorted(pool.pool[:, 0].tolist()) == [1.0, 3.0]  # the 2 worst of 8
    pool.update(_batch(8, 100), torch.arange(8.0))
    pool.update(_batch(8, 200), torch.arange(8.0))
    assert pool.pool[:, 0].tolist() == [207.0, 206.0, 107.0, 106.0, 1.0, 3.0]  # newest hard rays first
    pool.update(_batch(8, 400), torch.arange(8.0))
    assert pool.pool.shape == (6, 9) and pool.pool[:, 0].tolist()[-2:] == [107.0, 106.0]  # oldest dropped
    extended = pool.extend(_batch(8, 300), 8)
    assert extended["rays_o"].shape == (10, 3)  # 8 + 25% of the batch size
    replayed = extended["rays_o"][8:, 0]
    assert set(replayed.tolist()) <= set(pool.pool[:, 0].tolist())
    assert torch.equal(extended["rays_d"][8:], -extended["rays_o"][8:])  # rows stay whole rays
    assert torch.allclose(extended["rgb"][8:], extended["rays_o"][8:] / 1000)
