"""Kill-and-resume: a data_gen process killed with SIGKILL mid-run, rerun, gives the uninterrupted shards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.shards import read_meta
from data_gen.render import run
from testing.cli import REPO
from testing.runs import data_gen_cfg, shard_hashes

OVERRIDES = ("n_views=24", "views_per_shard=2")


@pytest.mark.slow
def test_sigkill_then_rerun_equals_uninterrupted_run(tiny_scene: Path, run_dir: Path,
                                                     tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    run(data_gen_cfg(tiny_scene, run_dir, *OVERRIDES, f"out_dir={reference}"))
    expected = shard_hashes(reference)
    assert len(expected) == 12

    folder = run_dir / "pseudo"
    cli = [sys.executable, "-m", "data_gen.render", f"scene.path={tiny_scene}", f"run_dir={run_dir}",
           "image_scale=0.5", "progress=false", *OVERRIDES]
    proc = subprocess.Popen(cli, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list((folder / ".progress").glob("shard-*.json")):  # wait until some shard is complete
        assert proc.poll() is None, f"data_gen exited early: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "no shard was completed in time"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (folder / "meta.json").exists(), "the run finished before the kill; the test needs more shards"
    done_before = len(list((folder / ".progress").glob("shard-*.json")))
    assert 1 <= done_before < 12

    metrics = run(data_gen_cfg(tiny_scene, run_dir, *OVERRIDES))
    assert metrics["complete"] and metrics["skipped"] >= 2 * done_before
    assert metrics["written"] + metrics["skipped"] == 24
    assert shard_hashes(folder) == expected
    assert read_meta(folder, verify_hashes=True).to_dict() == read_meta(reference).to_dict()
    assert not list(folder.glob(".*.tmp"))
