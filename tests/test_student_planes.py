"""Feature planes (student.planes) against a plain bilinear reference: values and gradients, borders."""

from __future__ import annotations

import pytest
import torch

from student.planes import PLANE_AXES, PlaneEncoding, lookup_batches, sample_planes


def bilinear_reference(plane: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """``[N, C]`` bilinear reads of ``plane [C, R, R]`` at ``xy [N, 2]`` in ``[-1, 1]`` (x: width), texel
    centres at ``(i + 0.5) / R * 2 - 1`` (``align_corners=False``), zeros outside: written out by hand."""
    C, R, _ = plane.shape
    px = (xy[:, 0] + 1) * R / 2 - 0.5  # continuous texel coordinates
    py = (xy[:, 1] + 1) * R / 2 - 0.5
    x0, y0 = torch.floor(px), torch.floor(py)
    out = torch.zeros(xy.shape[0], C, dtype=plane.dtype)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            w = (1 - (px - xi).abs()) * (1 - (py - yi).abs())  # [N]
            inside = (xi >= 0) & (xi < R) & (yi >= 0) & (yi < R)
            xc, yc = xi.clamp(0, R - 1).long(), yi.clamp(0, R - 1).long()
            out = out + (w * inside)[:, None] * plane[:, yc, xc].T
    return out


def _points(n: int, spread: float = 1.2) -> torch.Tensor:
    return (torch.rand(n, 3, dtype=torch.float64) * 2 - 1) * spread  # some outside [-1, 1]


@pytest.mark.parametrize("shape, batches", [((4, 6, 5), 8), ((1, 3, 5), 1)], ids=["split", "whole"])
def test_sample_planes_equals_the_bilinear_reference_with_gradients(shape: tuple[int, int, int],
                                                                    batches: int) -> None:
    """Training splits the lookup into batch entries (a thread each in the backward): the same values and
    gradients; inference reads the planes as one entry."""
    torch.manual_seed(0)
    B, P, Q = shape
    planes = torch.randn(3, 5, 7, 7, dtype=torch.float64, requires_grad=True)
    pts = _points(B * P * Q).requires_grad_(True)
    assert lookup_batches(B * P, planes) == batches
    with torch.no_grad():
        assert lookup_batches(B * P, planes) == 1
        plain = sample_planes(planes, pts.reshape(B, P, Q, 3))
    got = sample_planes(planes, pts.reshape(B, P, Q, 3))  # [B, C, P, Q]
    torch.testing.assert_close(got, plain, rtol=1e-12, atol=1e-12)
    got = got.permute(0, 2, 3, 1).reshape(-1, 5)
    want = sum(bilinear_reference(planes[i], pts[:, list(ax)]) for i, ax in enumerate(PLANE_AXES))
    assert isinstance(want, torch.Tensor)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    weights = torch.randn_like(want)
    g_got = torch.autograd.grad((got * weights).sum(), (planes, pts))
    g_want = torch.autograd.grad((want * weights).sum(), (planes, pts))
    for a, b in zip(g_got, g_want):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_border_texels_and_outside_points() -> None:
    """At the box's faces a point reads half the border texel (zero padding); beyond it, nothing."""
    plane = torch.ones(1, 1, 4, 4, dtype=torch.float64).expand(3, 1, 4, 4).contiguous()
    inside = sample_planes(plane, torch.zeros(1, 1, 1, 3, dtype=torch.float64))
    assert torch.allclose(inside, torch.tensor(3.0, dtype=torch.float64))
    on_face = sample_planes(plane, torch.tensor([[[[1.0, 0.0, 0.0]]]], dtype=torch.float64))
    assert torch.allclose(on_face, torch.tensor(0.5 + 0.5 + 1.0, dtype=torch.float64))  # xy, xz halved
    outside = sample_planes(plane, torch.full((1, 1, 1, 3), 1.5, dtype=torch.float64))
    assert outside.abs().max() == 0


def test_levels_concatenate_along_channels() -> None:
    torch.manual_seed(1)
    enc = PlaneEncoding(channels=3, resolutions=[4, 16])
    pts = torch.rand(2, 3, 5, 3) * 2 - 1
    out = enc(pts)
    assert out.shape == (2, 6, 3, 5) and enc.out_dim == 6
    torch.testing.assert_close(out[:, 3:], sample_planes(enc.planes[1], pts))
