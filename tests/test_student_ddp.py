"""Data-parallel student: Lightning DDP with 2 CPU processes (gloo) over disjoint shards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.io import write_json
from core.scene_facts import SceneFacts
from core.shards import PseudoMeta, ShardInfo, read_meta, shard_name
from data_gen.shards import write_shard
from report.build import read_curves
from student.data import shard_loader

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("cache_gb", ["2.0", "0"], ids=["rays-in-memory", "streamed"])
def test_ddp_two_processes_runs_and_loss_falls(tiny_scene: Path, tiny_pseudo_run: Path,
                                               tmp_path: Path, cache_gb: str) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_pseudo_run / "pseudo", run_dir / "pseudo")
    cmd = [
        sys.executable, "-m", "student.train", f"scene.path={tiny_scene}", f"run_dir={run_dir}",
        "train.devices=2", "train.num_workers=1", "train.progress_bar=false", "train.shuffle_buffer=512",
        "model.depth=4", "model.width=32", "model.n_points=8", "model.n_freqs=4",
        "train.distill.max_steps=50", "train.distill.batch_size=256", "train.distill.warmup_steps=5",
        "train.distill.lr=5e-3", "train.distill.val_every_steps=25", "train.finetune.enabled=false",
        "eval.chunk=128", f"train.ray_cache_gb={cache_gb}",
        # the logged loss would include the replayed hardest rays: compare plain batch losses
        "train.hard_mining.enabled=false",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "student" / "metrics.json").read_text())
    assert metrics["devices"] == 2 and metrics["stages"]["distill"]["steps"] == 50
    loss = [v for _, v in read_curves(run_dir / "student" / "logs" / "csv" / "distill")["train/loss"]]
    assert len(loss) >= 4 and sum(loss[-2:]) / 2 < 0.8 * loss[0], loss  # batch losses of 256 rays: noisy


def _numbered_pseudo(folder: Path, n_shards: int, per_shard: int, hw: tuple[int, int]) -> PseudoMeta:
    """Shards whose every pixel's red channel is its ray number over 255 (exact in an 8-bit PNG)."""
    H, W = hw
    gen = torch.Generator().manual_seed(0)
    shards = []
    for s in range(n_shards):
        views = []
        for v in range(s * per_shard, (s + 1) * per_shard):
            rgb = torch.zeros(H, W, 3)
            rgb[..., 0] = (v * H * W + torch.arange(H * W).reshape(H, W)) / 255.0
            c2w = torch.eye(4)
            c2w[:3, 3] = torch.randn(3, generator=gen)
            K = torch.tensor([[float(W), 0.0, W / 2], [0.0, float(W), H / 2], [0.0, 0.0, 1.0]])
            views.append({"view_index": v, "rgb": rgb, "c2w": c2w, "K": K})
        sha = write_shard(folder / shard_name(s), views)
        shards.append(ShardInfo(shard_name(s), s * per_shard, per_shard, sha))
    box = [-1.0, -1, -1, 1, 1, 1]
    facts = SceneFacts(aabb=box, content_aabb=box, near=0.1, far=10.0, image_size=[H, W], K=K.tolist(),
                       scene_name="numbered", background=[0.0, 0, 0])
    meta = PseudoMeta(scene=facts, image_size=[H, W], n_views=n_shards * per_shard, views_per_shard=per_shard,
                      shards=shards)
    write_json(folder / "meta.json", meta.to_dict())
    return read_meta(folder)


def test_loader_gives_each_ray_to_one_rank_and_worker_once(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``student.data.shard_loader`` over 2 ranks x 2 workers: one pass sees every ray exactly once."""
    meta = _numbered_pseudo(tmp_path, n_shards=4, per_shard=2, hw=(4, 4))
    seen: list[int] = []
    per_stream: list[set[int]] = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))  # how webdataset's node splitter learns the rank
        monkeypatch.setenv("WORLD_SIZE", "2")
        loader = shard_loader(meta, batch_size=16, buffer_size=8, num_workers=2, seed=0, world_size=2,
                              content_only=False)
        assert loader.num_workers == 2
        ids = [torch.round(batch["rgb"][:, 0] * 255).long().tolist() for batch in loader]
        seen += [i for batch in ids for i in batch]
        assert len(ids) == 4
        per_stream += [set(ids[k] + ids[k + 2]) for k in (0, 1)]  # the two workers' batches alternate
    assert sorted(seen) == list(range(meta.n_rays))
    shard_rays = meta.n_rays // 4
    assert sorted(min(s) for s in per_stream) == [0, shard_rays, 2 * shard_rays, 3 * shard_rays]
    assert all(s == set(range(min(s), min(s) + shard_rays)) for s in per_stream)  # one whole shard each
