"""``benchmarks.error_regions``: the regions partition the pixels, the shares and PSNRs of a known error,
and the study on a tiny image run (its RESULTS.md section written to a temporary path)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from benchmarks import error_regions, results
from testing.runs import export_tiny_image_run, make_tiny_teacher_run


def test_regions_partition_the_pixels_by_background_and_contrast() -> None:
    bg = torch.tensor([1.0, 1.0, 1.0])
    gt = torch.ones(1, 5, 6, 3)
    gt[0, 1:4, 1:5] = 0.5  # an object: flat inside, a strong edge to the background
    gt[0, 2, 2] = 0.4  # a texture step inside it
    parts = error_regions.regions(gt, bg)
    stack = torch.stack(list(parts.values()))
    assert torch.equal(stack.sum(0), torch.ones(1, 5, 6, dtype=torch.long))  # each pixel in one region
    names = list(parts)
    assert parts["background"].sum() == 30 - 12
    assert parts[names[3]][0, 1, 1] and parts[names[3]][0, 3, 4]  # beside the background: an edge
    assert parts[names[2]][0, 2, 3] and not parts[names[3]][0, 2, 3]  # beside the step: texture
    assert parts[names[1]][0, 2, 2] and parts[names[1]].sum() == 1  # the step itself: equal neighbours


def test_breakdown_shares_and_psnr_of_a_known_error() -> None:
    gt = torch.zeros(1, 2, 2, 3)
    pred = gt.clone()
    pred[0, 0, 0] = 0.1  # squared error 0.01 on one pixel of the first region
    pred[0, 1, 1] = 0.3  # 0.09 on one of the second
    first = torch.tensor([[[True, True], [False, False]]])
    out = error_regions.breakdown(pred, gt, {"a": first, "b": ~first, "none": torch.zeros_like(first)})
    assert out["a"][0] == 50.0 and out["b"][0] == 50.0
    assert out["a"][1] == pytest.approx(10.0) and out["b"][1] == pytest.approx(90.0)
    assert out["a"][2] == pytest.approx(-10 * math.log10(0.005))
    assert math.isnan(out["none"][1]) and math.isnan(out["none"][2])


def test_by_scale_splits_a_known_error_into_block_means_and_detail() -> None:
    gt = torch.rand(2, 8, 9, 3)  # the ninth column is past the last whole 4x4 block: left out
    offset = torch.full_like(gt, 0.1)  # the same error at every pixel: all in the block means
    out = error_regions.by_scale(gt + offset, gt, 4)
    assert out["block means (4x4)"][0] == pytest.approx(100.0)
    assert out["block means (4x4)"][1] == pytest.approx(20.0)
    checker = (torch.arange(8)[:, None] + torch.arange(9)[None]) % 2 * 0.2 - 0.1  # +-0.1: block means 0
    out = error_regions.by_scale(gt + checker[None, :, :, None], gt, 4)
    assert out["within the blocks"][0] == pytest.approx(100.0)
    noise = torch.randn_like(gt) * 0.05
    out = error_regions.by_scale(gt + noise, gt, 2)
    shares = [share for share, _ in out.values()]
    assert sum(shares) == pytest.approx(100.0) and min(shares) > 5.0
    mse = [10 ** (-db / 10) for _, db in out.values()]
    assert sum(mse) == pytest.approx(float((noise[:, :8, :8] ** 2).mean()), rel=1e-4)
    with pytest.raises(ValueError, match="holds no 16x16 block"):
        error_regions.by_scale(gt, gt, 16)


def test_the_study_on_a_tiny_image_run(tiny_scene: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "RESULTS", tmp_path / "RESULTS.md")
    run = tmp_path / "run"
    make_tiny_teacher_run(run, tiny_scene)
    export_tiny_image_run(run, tiny_scene)
    table = error_regions.main(["--run-dir", str(run), "--scene", str(tiny_scene), "--views", "2"])
    rows = [line for line in table.splitlines() if line.startswith(("| student", "| teacher"))]
    assert len(rows) == 14 and rows[0].startswith("| student | whole views | 100.0 | 100.0 |")
    shares = [float(r.split(" | ")[3]) for r in rows[1:5] if "nan" not in r]
    assert sum(shares) == pytest.approx(100.0, abs=0.3)
    by_scale = [float(r.split(" | ")[3]) for r in rows[5:7]]
    assert "block means" in rows[5] and sum(by_scale) == pytest.approx(100.0, abs=0.2)
    assert "## error_regions" in (tmp_path / "RESULTS.md").read_text()
