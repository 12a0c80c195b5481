"""Data-parallel student: Lightning DDP with 2 CPU processes (gloo) over disjoint shards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from student.report import read_curves

REPO = Path(__file__).resolve().parents[1]


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


def test_ranks_read_disjoint_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """webdataset's node and worker splitters give each (rank, worker) its own shards."""
    import webdataset as wds

    urls = [f"shard-{i:06d}.tar" for i in range(5)]
    seen = []
    for rank in range(2):
        monkeypatch.setattr(wds.utils, "pytorch_worker_info", lambda group=None, r=rank: (r, 2, 0, 1))
        seen.append(list(wds.split_by_node(iter(urls))))
    assert seen == [urls[0::2], urls[1::2]]
