"""The teacher field: spherical harmonics, truncated exponential, shapes and the checkpoint round trip."""

from __future__ import annotations

import math

import pytest
import torch

from core.errors import CheckpointError
from cuda.backend import HashGridConfig
from teacher.checkpoint import load_teacher, save_teacher
from teacher.field import FieldConfig, TeacherField, sh_encode, trunc_exp
from teacher.model import TeacherModelConfig, build_teacher
from teacher.occupancy import OccupancyConfig
from teacher.render import MarchConfig

SMALL_FIELD = FieldConfig(grid=HashGridConfig(n_levels=4, log2_hashmap_size=12, max_resolution=64,
                                              backend="torch"))


def test_sh_encode_worked_values() -> None:
    up = sh_encode(torch.tensor([[0.0, 0.0, 1.0]]))[0]
    expected_up = torch.zeros(16)
    expected_up[0] = 0.5 / math.sqrt(math.pi)  # Y_0^0
    expected_up[2] = math.sqrt(3 / (4 * math.pi))  # Y_1^0 at z = 1
    expected_up[6] = math.sqrt(5 / (16 * math.pi)) * 2  # Y_2^0 = c (3 z^2 - 1)
    expected_up[12] = math.sqrt(7 / (16 * math.pi)) * 2  # Y_3^0 = c (5 z^3 - 3 z)
    torch.testing.assert_close(up, expected_up, rtol=1e-6, atol=1e-7)
    x = sh_encode(torch.tensor([[1.0, 0.0, 0.0]]))[0]
    assert x[3] == pytest.approx(-math.sqrt(3 / (4 * math.pi)), rel=1e-6)  # Y_1^1 = -c x
    assert x[8] == pytest.approx(0.25 * math.sqrt(15 / math.pi), rel=1e-6)  # Y_2^2 = c (x^2 - y^2)
    assert x[15] == pytest.approx(-0.25 * math.sqrt(35 / (2 * math.pi)), rel=1e-6)  # c x (3 y^2 - x^2)


def test_sh_encode_is_orthonormal() -> None:
    """Monte-Carlo check: the 16 functions are orthonormal over the sphere."""
    gen = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(400_000, 3, generator=gen, dtype=torch.float64), dim=-1)
    Y = sh_encode(d)
    gram = Y.T @ Y * (4 * math.pi / d.shape[0])
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.03, rtol=0)


def test_trunc_exp_clamps_gradient() -> None:
    x = torch.tensor([0.5, 20.0, -30.0], dtype=torch.float64, requires_grad=True)
    y = trunc_exp(x)
    torch.testing.assert_close(y, torch.exp(x.detach()))
    y.sum().backward()
    expected = torch.exp(torch.tensor([0.5, 15.0, -15.0], dtype=torch.float64))
    torch.testing.assert_close(x.grad, expected)


def test_field_shapes_and_outside_density() -> None:
    aabb = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    field = TeacherField(SMALL_FIELD, aabb)
    x = torch.rand(50, 3) * 2 - 1
    x[0] = torch.tensor([3.0, 0.0, 0.0])  # outside the box
    d = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)
    sigmas, rgbs = field(x, d)
    assert sigmas.shape == (50,) and rgbs.shape == (50, 3)
    assert sigmas[0] == 0 and bool((sigmas[1:] > 0).all())
    assert bool(((rgbs > 0) & (rgbs < 1)).all())
    (sigmas.sum() + rgbs.sum()).backward()
    assert field.grid.params.grad is not None and field.grid.params.grad.abs().sum() > 0


def _small_teacher() -> torch.nn.Module:
    cfg = TeacherModelConfig(field=SMALL_FIELD, occupancy=OccupancyConfig(resolution=8),
                             render=MarchConfig(steps_per_diagonal=64))
    return build_teacher(cfg, torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]), 0.5, 6.0)


def test_teacher_checkpoint_round_trip(tmp_path) -> None:
    teacher = _small_teacher()
    with torch.no_grad():
        teacher.field.grid.params.uniform_(-1, 1)
    teacher.update_occupancy(0)
    path = save_teacher(tmp_path / "teacher.ckpt", teacher, steps=3, train_seconds=1.0)
    loaded = load_teacher(path, backend="torch")
    rays_o = torch.tensor([[0.0, 0.0, -3.0]]).repeat(5, 1)
    rays_d = torch.nn.functional.normalize(torch.randn(5, 3) * 0.1 + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    bg = torch.tensor([1.0, 1.0, 1.0])
    with torch.inference_mode():
        a = teacher.eval().render_rays(rays_o, rays_d, bg)
        b = loaded.render_rays(rays_o, rays_d, bg)
    torch.testing.assert_close(a["rgb"], b["rgb"])
    torch.testing.assert_close(loaded.occupancy.binary, teacher.occupancy.binary)
    assert loaded.near == teacher.near and loaded.far == teacher.far


def test_load_teacher_errors(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_teacher(tmp_path / "missing.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        load_teacher(bad)
    from core.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "student.ckpt", "student", {}, {})
    with pytest.raises(CheckpointError, match="expected a teacher"):
        load_teacher(tmp_path / "student.ckpt")
    teacher = _small_teacher()
    path = save_teacher(tmp_path / "t.ckpt", teacher)
    payload = torch.load(path, weights_only=True)
    payload["config"]["model"]["field"]["n_levels"] = 5
    torch.save(payload, tmp_path / "mismatch.ckpt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_teacher(tmp_path / "mismatch.ckpt")
