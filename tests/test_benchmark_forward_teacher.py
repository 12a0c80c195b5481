"""``benchmarks.forward_teacher`` on a tiny forward-facing scene: a row per variant, the forward budget
factor in effect, the RESULTS.md section and the JSON (written to temporary paths)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import forward_teacher, results

TINY = ["model.field.grid.n_levels=4", "model.field.grid.log2_hashmap_size=12",
        "model.field.grid.max_resolution=64", "model.occupancy.resolution=16", "train.batch_rays=256",
        "train.max_seconds=1", "eval.n_renders=0"]


def test_variants_rows_budget_and_section(tiny_forward_scene: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "RESULTS", tmp_path / "RESULTS.md")
    argv = ["--scene", str(tiny_forward_scene), "--variants", "before", "default",
            "--work", str(tmp_path / "w"), "--json", str(tmp_path / "out.json"), "--set", *TINY]
    record = forward_teacher.main(argv)
    before, default = record["rows"]
    assert (before["variant"], default["variant"]) == ("before", "default")
    assert 1.0 <= before["train_s"] < 2.0 <= default["train_s"] < 3.0  # forward.seconds_factor=2 by default
    assert all(r["steps"] > 0 and 0 < r["test_psnr"] < 60 and r["samples_per_ray"] > 0
               for r in record["rows"])
    assert json.loads((tmp_path / "out.json").read_text()) == record
    section = (tmp_path / "RESULTS.md").read_text()
    assert "<!-- BEGIN forward_teacher -->" in section
    assert "| before |" in section and "| default |" in section
