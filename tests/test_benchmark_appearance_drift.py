"""``benchmarks.appearance_drift``: the per-view affine fit finds a known drift and none where there is none;
the study end to end on a tiny run, and its one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

from benchmarks import appearance_drift, results
from core.rays import generate_rays
from scenes.images import SceneSplit
from testing.cli import main_error


class _DirectionColors:
    """A renderer whose color is a fixed smooth function of the ray direction (no scene)."""

    aabb = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])

    def render_rays(self, rays_o: Tensor, rays_d: Tensor, background: Tensor,
                    **_: object) -> dict[str, Tensor]:
        d = torch.nn.functional.normalize(rays_d, dim=-1)
        return {"rgb": 0.5 + 0.4 * torch.stack([d[:, 0], d[:, 1] * d[:, 2], torch.sin(3 * d[:, 0])], -1)}


def _split(gains: Tensor, offsets: Tensor, H: int = 12, W: int = 16) -> SceneSplit:
    """Views whose photos are the renderer's colors under a per-view gain and offset."""
    gen = torch.Generator().manual_seed(0)
    n = gains.shape[0]
    c2w = torch.eye(4).repeat(n, 1, 1)
    c2w[:, :3, 3] = torch.randn(n, 3, generator=gen) * 0.1
    K = torch.tensor([[14.0, 0, W / 2], [0, 14.0, H / 2], [0, 0, 1]]).repeat(n, 1, 1)
    images = []
    for v in range(n):
        _, d = generate_rays(c2w[v], K[v], H, W)
        rgb = _DirectionColors().render_rays(d, d, torch.zeros(3))["rgb"] * gains[v] + offsets[v]
        images.append(torch.cat([rgb, torch.ones(H * W, 1)], -1).reshape(H, W, 4))
    return SceneSplit(torch.stack(images), c2w, K, [f"v{v}.png" for v in range(n)])


def test_the_fit_recovers_an_affine_map_on_held_out_pixels() -> None:
    gen = torch.Generator().manual_seed(1)
    pred = torch.rand(400, 3, generator=gen)
    m = torch.tensor([[0.9, 0.05, 0.0], [0.0, 1.1, 0.02], [0.03, 0.0, 0.8], [0.02, -0.01, 0.05]])
    target = torch.cat([pred, torch.ones(400, 1)], 1) @ m
    before, after, fitted = appearance_drift.affine_fit_gain(pred, target, gen)
    assert before > 1e-3 and after < 1e-10 * before
    torch.testing.assert_close(fitted, m, rtol=1e-4, atol=1e-5)


def test_drift_shows_as_gain_and_none_without_it() -> None:
    renderer = _DirectionColors()
    gains = torch.tensor([[1.0, 1.0, 1.0], [1.2, 1.0, 0.9], [0.8, 0.9, 1.1]])
    offsets = torch.tensor([[0.0, 0.0, 0.0], [0.02, -0.03, 0.0], [0.0, 0.05, -0.02]])
    drifted = appearance_drift.drift_rows(renderer, _split(gains, offsets), [0.0, 0.0, 0.0], 150)
    assert drifted["views"] == 3 and drifted["gain_mean"] > 20 and drifted["psnr_after"] > 60
    torch.testing.assert_close(torch.tensor(drifted["gain_spread"]), gains.std(0), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(torch.tensor(drifted["offset_spread"]), offsets.std(0), rtol=1e-3, atol=1e-4)
    steady_split = _split(torch.ones(3, 3), torch.zeros(3, 3))
    steady = appearance_drift.drift_rows(renderer, steady_split, [0.0] * 3, 150)
    assert steady["psnr_before"] > 100 and steady["gain_spread"] == pytest.approx([0.0] * 3, abs=1e-4)


def test_the_study_on_a_tiny_run(tiny_teacher_run: Path, tiny_scene: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(results, "RESULTS", tmp_path / "RESULTS.md")
    argv = ["--run-dir", str(tiny_teacher_run), "--scene", str(tiny_scene), "--pixels", "64"]
    record = appearance_drift.main(argv)
    assert set(record["rows"]) == {"train", "test"}
    assert all(math.isfinite(r["psnr_before"]) and r["views"] > 0 for r in record["rows"].values())
    out = capsys.readouterr().out
    assert "| train |" in out and "| test |" in out and "On the test photos" in out
    section = (tmp_path / "RESULTS.md").read_text()
    assert f"Command: `python -m benchmarks.appearance_drift {' '.join(argv)}`" in section


def test_bad_input_is_one_line(tiny_teacher_run: Path, tiny_scene: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--run-dir", str(tmp_path), "--scene", str(tiny_scene), "--no-write"]
    assert "teacher.ckpt: no teacher checkpoint" in main_error(appearance_drift.main, argv, capsys)
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "teacher.ckpt").write_bytes(b"not a checkpoint")
    assert "teacher.ckpt" in main_error(appearance_drift.main, argv, capsys)
    missing_scene = ["--run-dir", str(tiny_teacher_run), "--scene", str(tmp_path / "nowhere"), "--no-write"]
    assert "nowhere" in main_error(appearance_drift.main, missing_scene, capsys)
