"""Data-parallel data generation: two torchrun ranks (gloo) write the same shards as one process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.io import sha256_file
from core.shards import read_meta
from data_gen.render import run
from testing.cli import REPO
from testing.runs import data_gen_cfg

OVERRIDES = ("n_views=9", "views_per_shard=2", "depth=true")


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_ranks_write_the_same_shards_as_one(tiny_scene: Path, run_dir: Path,
                                                tmp_path: Path) -> None:
    single = tmp_path / "single"
    run(data_gen_cfg(tiny_scene, run_dir, *OVERRIDES, f"out_dir={single}"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "data_gen.render", f"scene.path={tiny_scene}", f"run_dir={run_dir}", "image_scale=0.5",
           "progress=false", *OVERRIDES]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("9 views rendered, 0 skipped, complete") == 1  # rank 0 reports the total
    meta = read_meta(run_dir / "pseudo", verify_hashes=True)
    assert meta.to_dict() == read_meta(single).to_dict()
    assert [sha256_file(p) for p in meta.shard_paths()] == [s.sha256 for s in read_meta(single).shards]
