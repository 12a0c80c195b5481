"""``benchmarks.surface_study``: the baked-grid march against closed forms and a per-sample loop, the bake's
layout, and the study end to end on a tiny run (rows, the section, one-line errors)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmarks import results, surface_study
from testing.cli import main_error
from testing.runs import write_photo_pseudo


def _loop_march(grid: torch.Tensor, box: torch.Tensor, o: torch.Tensor, d: torch.Tensor, n: int,
                mode: str) -> tuple[float, float]:
    """One ray, one sample at a time, in float64: the compositing the march must match."""
    lo, hi = box[:3].double(), box[3:].double()
    inv = 1 / d.double()
    t0, t1 = (lo - o.double()) * inv, (hi - o.double()) * inv
    t_near = max(float(torch.minimum(t0, t1).max()), 0.0)
    t_far = max(float(torch.maximum(t0, t1).min()), t_near)
    trans, opacity, depth_sum = 1.0, 0.0, 0.0
    for k in range(n):
        t = t_near + (t_far - t_near) * (k + 0.5) / n
        p = ((o.double() + d.double() * t - lo) / (hi - lo) * 2 - 1).float()
        sigma = float(F.grid_sample(grid, p.reshape(1, 1, 1, 1, 3), mode=mode, align_corners=False))
        alpha = 1 - math.exp(-sigma * (t_far - t_near) / n)
        opacity += trans * alpha
        depth_sum += trans * alpha * t
        trans *= 1 - alpha
    return depth_sum / max(opacity, 1e-6), opacity


def _run_with_teacher(tiny_teacher_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_teacher_run / "teacher", run / "teacher")
    return run


def test_march_of_a_constant_density_is_the_closed_form() -> None:
    box = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    sigma, n = 0.7, 16
    grid = torch.full((1, 1, 32, 32, 32), sigma)  # every sample more than half a cell inside the box
    o = torch.tensor([[0.1, -0.2, -3.0], [0.3, 0.2, 3.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    depth, opacity = surface_study.march_grid(grid, box, o, d, n)
    # segment [2, 4] for both rays; n equal bins of alpha a: weights (1 - a)^k a at the bin centres
    a = 1 - math.exp(-sigma * 2 / n)
    w = [(1 - a) ** k * a for k in range(n)]
    expected_depth = sum(wk * (2 + 2 * (k + 0.5) / n) for k, wk in enumerate(w)) / sum(w)
    torch.testing.assert_close(opacity, torch.full((2,), 1 - math.exp(-sigma * 2)), rtol=1e-5, atol=0)
    torch.testing.assert_close(depth, torch.full((2,), expected_depth), rtol=1e-5, atol=0)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_march_equals_a_per_sample_loop_on_random_rays(mode: str) -> None:
    gen = torch.Generator().manual_seed(3)
    box = torch.tensor([-1.0, -0.5, -0.8, 1.2, 0.9, 0.6])
    grid = torch.rand(1, 1, 6, 7, 5, generator=gen) * 3
    o = torch.randn(9, 3, generator=gen) * 0.15 + torch.tensor([0.1, 0.2, -3.0])
    d = F.normalize(torch.randn(9, 3, generator=gen) * 0.05 + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    depth, opacity = surface_study.march_grid(grid, box, o, d, 24, mode)
    ref = torch.tensor([_loop_march(grid, box, o[i], d[i], 24, mode) for i in range(9)], dtype=torch.float32)
    assert (ref[:, 1] > 0.1).all()  # the rays cross the density
    torch.testing.assert_close(depth, ref[:, 0], rtol=1e-4, atol=0)
    torch.testing.assert_close(opacity, ref[:, 1], rtol=1e-4, atol=0)


def test_bake_puts_each_cell_centre_at_its_grid_index() -> None:
    box = torch.tensor([-1.0, 0.0, 2.0, 1.0, 4.0, 3.0])
    grid = surface_study.bake_density(lambda x: x[:, 0] + 10 * x[:, 1] + 100 * x[:, 2], box, 4)
    assert grid.shape == (1, 1, 4, 4, 4)
    k, j, i = 3, 1, 2  # (z, y, x)
    centre = box[:3] + (torch.tensor([i, j, k]) + 0.5) / 4 * (box[3:] - box[:3])
    assert float(grid[0, 0, k, j, i]) == pytest.approx(float(centre[0] + 10 * centre[1] + 100 * centre[2]))


def test_the_study_on_a_tiny_run(tiny_teacher_run: Path, tiny_scene: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_with_teacher(tiny_teacher_run, tmp_path)
    write_photo_pseudo(run / "pseudo", tiny_scene, geometry=True)
    monkeypatch.setattr(results, "RESULTS", tmp_path / "RESULTS.md")
    argv = ["--run-dir", str(run), "--scene", str(tiny_scene), "--seconds", "0.5", "--views", "2",
            "--grids", "8", "--samples", "4", "--lookup-points", "4096"]
    record = surface_study.main(argv)
    names = [r["geometry"] for r in record["rows"]]
    assert names == ["teacher geometry", "baked march 8^3 x 4, trilinear", "baked march 8^3 x 4, nearest",
                     "coarse depth (baked 8^3 x 4 at 1/2), teacher opacity"]
    assert all(math.isfinite(r["psnr"]) for r in record["rows"]) and record["steps"] > 0
    assert record["ns"]["bilinear"] > 0 and record["ns"]["nearest"] > 0
    out = capsys.readouterr().out
    assert "| teacher (its own render) |" in out and "| baked march 8^3 x 4, nearest | " in out
    section = (tmp_path / "RESULTS.md").read_text()
    assert "<!-- BEGIN surface_study -->" in section
    assert f"Command: `python -m benchmarks.surface_study {' '.join(argv)}`" in section


def test_bad_input_is_one_line(tiny_teacher_run: Path, tiny_scene: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    run = _run_with_teacher(tiny_teacher_run, tmp_path)
    write_photo_pseudo(run / "pseudo", tiny_scene)
    argv = ["--run-dir", str(run), "--scene", str(tiny_scene), "--no-write"]
    assert main_error(surface_study.main, argv, capsys) == (
        "error: the pseudo-data has no depth and alpha: render it with "
        "python -m data_gen.render depth=true alpha=true")
    no_run = ["--run-dir", str(tmp_path / "none"), "--no-write"]
    assert "teacher.ckpt: no teacher checkpoint" in main_error(surface_study.main, no_run, capsys)
    shutil.rmtree(run / "pseudo")
    assert "pseudo" in main_error(surface_study.main, argv, capsys)  # read_meta's one line, not a traceback
