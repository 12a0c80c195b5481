"""The tri-plane lookup kernel (cuda.planes) against the hand-written bilinear reference and grid_sample:
values, gradients into the planes, borders, thread counts, the seam in student.planes, bad input."""

from __future__ import annotations

import logging

import pytest
import torch

import student.planes as planes_module
from cuda import build
from cuda.planes import kernel_applies, plane_lookup
from student.planes import PLANE_AXES, grid_lookup, sample_planes
from tests.test_student_planes import bilinear_reference


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    build.load_extension("planes")  # build once up front (under a minute on a clean cache)


def _reference(planes: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:  # float64 [N, C]
    p64, x64 = planes.double(), pts.double()
    out = sum(bilinear_reference(p64[i], x64[:, list(ax)]) for i, ax in enumerate(PLANE_AXES))
    assert isinstance(out, torch.Tensor)
    return out


def _coords(pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return pts[..., 0], pts[..., 1], pts[..., 2]


def _points(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(n, 3, generator=g) * 2 - 1) * 1.15  # some outside the box
    face = torch.randint(0, 3, (n // 8,), generator=g)
    pts[torch.arange(n // 8), face] = 1.0  # on a face: half a border texel
    pts[n // 8: n // 4] = torch.round(pts[n // 8: n // 4] * 8) / 8  # on texel edges and centres
    return pts


@pytest.mark.parametrize("n, C, R", [(1, 1, 2), (777, 5, 7), (20_000, 16, 64)])
def test_kernel_equals_the_bilinear_reference_with_gradients(n: int, C: int, R: int) -> None:
    torch.manual_seed(n)
    planes = torch.randn(3, C, R, R, requires_grad=True)
    pts = _points(n, seed=n)
    got = plane_lookup(planes, pts)
    want = _reference(planes.detach(), pts)
    assert got.shape == (n, C) and want.abs().max() > 0
    # float32 texel coordinates round to ~R * 6e-8 of a texel: elementwise 1e-4, 1e-5 of the whole
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    assert (got.double() - want).norm() / want.norm() < 1e-5
    weights = torch.randn(n, C)
    (g_got,) = torch.autograd.grad((got * weights).sum(), planes)
    p64 = planes.detach().double().requires_grad_(True)
    (g_want,) = torch.autograd.grad((_reference(p64, pts) * weights.double()).sum(), p64)
    assert g_want.abs().max() > 0
    torch.testing.assert_close(g_got.double(), g_want, rtol=1e-4, atol=1e-4)


def test_kernel_equals_grid_sample_through_the_seam() -> None:
    """``sample_planes`` takes the kernel for a training lookup on the CPU, with grid_sample's values and
    gradients (``[B, C, P, Q]`` layout, batch in order)."""
    torch.manual_seed(3)
    planes = torch.randn(3, 6, 16, 16, requires_grad=True)
    pts = _points(2 * 5 * 7, seed=3).reshape(2, 5, 7, 3)
    assert kernel_applies(planes, pts)
    got, want = sample_planes(planes, pts), grid_lookup(planes, _coords(pts))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(want)
    g_got = torch.autograd.grad((got * weights).sum(), planes)[0]
    g_want = torch.autograd.grad((want * weights).sum(), planes)[0]
    torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-5)


def test_the_backward_does_not_depend_on_the_thread_count() -> None:
    """Each thread owns whole texel rows: 1, 2 and 5 threads give the same bits."""
    torch.manual_seed(4)
    planes = torch.randn(3, 8, 9, 9, requires_grad=True)
    pts = _points(5000, seed=4)
    weights = torch.randn(5000, 8)
    grads = [torch.autograd.grad((plane_lookup(planes, pts, n_threads=t) * weights).sum(), planes)[0]
             for t in (1, 2, 5)]
    assert grads[0].abs().max() > 0
    for g in grads[1:]:
        assert torch.equal(g, grads[0])


def test_far_and_non_finite_points_read_zeros() -> None:
    planes = torch.ones(3, 2, 4, 4, requires_grad=True)
    pts = torch.tensor([[1e30, 0.0, 0.0], [float("nan"), 0.0, 0.0], [0.0, 0.0, 0.0]])
    out = plane_lookup(planes, pts)
    # x far or NaN: the xy and xz planes read nothing, the yz plane its texel (1); the origin reads 3
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0], [1.0, 1.0], [3.0, 3.0]]))


def test_where_the_kernel_applies() -> None:
    planes = torch.zeros(3, 2, 4, 4, requires_grad=True)
    pts = torch.zeros(1, 1, 1, 3)
    assert kernel_applies(planes, pts)
    assert not kernel_applies(planes.double(), pts.double())
    assert not kernel_applies(planes, pts.clone().requires_grad_(True))  # no gradient into the points


@pytest.mark.parametrize("planes, points, match", [
    (torch.zeros(2, 4, 4, 4), torch.zeros(3, 3), "planes must be"),
    (torch.zeros(3, 4, 4, 5), torch.zeros(3, 3), "planes must be"),
    (torch.zeros(3, 4, 4, 4), torch.zeros(3, 2), "points must be"),
    (torch.zeros(3, 4, 4, 4), torch.zeros(3, 3, dtype=torch.float64), "points must be"),
    (torch.zeros(3, 4, 4, 4), torch.zeros(3, 3, requires_grad=True), "no gradient into the points"),
])
def test_bad_input_raises_value_error(planes: torch.Tensor, points: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plane_lookup(planes, points)


def test_no_compiler_falls_back_to_grid_sample_with_one_warning(monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    for name, value in (("_modules", {}), ("_failures", {}), ("_warned", set())):
        monkeypatch.setattr(build, name, value)
    monkeypatch.setattr(build, "compiler_available", lambda: False)
    planes = torch.randn(3, 4, 8, 8, requires_grad=True)
    pts = _points(60, seed=5).reshape(1, 6, 10, 3)
    with caplog.at_level(logging.WARNING):
        outs = [planes_module.sample_planes(planes, pts) for _ in range(2)]
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "plane-lookup kernel" in warnings[0] and "no C++ compiler" in warnings[0]
    torch.testing.assert_close(outs[0], grid_lookup(planes, _coords(pts)), rtol=0, atol=0)
