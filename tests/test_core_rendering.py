"""Packed volume rendering against worked examples and a dense per-ray loop reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from core.rendering import (
    accumulate_along_rays,
    composite_segments,
    distortion_packed,
    exclusive_cumsum_packed,
    render_transmittance_from_density,
    render_weights_from_density,
)


def _packed(counts: list[int], dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """Random packed samples: ``counts[r]`` sorted intervals for ray ``r`` (zeros allowed)."""
    n_rays = len(counts)
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), torch.tensor(counts))
    S = int(ray_indices.numel())
    deltas = torch.rand(S, dtype=dtype) * 0.2 + 0.01
    gaps = torch.rand(S, dtype=dtype) * 0.05  # samples need not touch
    t_starts = torch.empty(S, dtype=dtype)
    t_ends = torch.empty(S, dtype=dtype)
    i = 0
    for c in counts:
        t = 0.5
        for _ in range(c):
            t_starts[i] = t + gaps[i]
            t_ends[i] = t_starts[i] + deltas[i]
            t = float(t_ends[i])
            i += 1
    return {
        "t_starts": t_starts,
        "t_ends": t_ends,
        "sigmas": torch.rand(S, dtype=dtype) * 8,
        "rgbs": torch.rand(S, 3, dtype=dtype),
        "ray_indices": ray_indices,
        "n_rays": torch.tensor(n_rays),
    }


def _dense_reference(p: dict[str, Tensor]) -> dict[str, Tensor]:
    """The textbook per-ray loop: T_i = prod_{j<i} (1 - alpha_j), w_i = T_i alpha_i."""
    n_rays = int(p["n_rays"])
    S = p["sigmas"].numel()
    weights = torch.zeros(S, dtype=torch.float64)
    trans = torch.zeros(S, dtype=torch.float64)
    alphas = torch.zeros(S, dtype=torch.float64)
    rgb = torch.zeros(n_rays, 3, dtype=torch.float64)
    opacity = torch.zeros(n_rays, dtype=torch.float64)
    for r in range(n_rays):
        T = 1.0
        for i in torch.nonzero(p["ray_indices"] == r).flatten().tolist():
            delta = float(p["t_ends"][i] - p["t_starts"][i])
            a = 1.0 - math.exp(-float(p["sigmas"][i]) * delta)
            trans[i], alphas[i], weights[i] = T, a, T * a
            rgb[r] += T * a * p["rgbs"][i].double()
            opacity[r] += T * a
            T *= 1.0 - a
    return {"weights": weights, "trans": trans, "alphas": alphas, "rgb": rgb, "opacity": opacity}


def _render(p: dict[str, Tensor]) -> dict[str, Tensor]:
    n = int(p["n_rays"])
    weights, trans, alphas = render_weights_from_density(
        p["t_starts"], p["t_ends"], p["sigmas"], p["ray_indices"], n
    )
    rgb = accumulate_along_rays(weights, p["rgbs"], p["ray_indices"], n)
    opacity = accumulate_along_rays(weights, None, p["ray_indices"], n)[:, 0]
    return {"weights": weights, "trans": trans, "alphas": alphas, "rgb": rgb, "opacity": opacity}


def _assert_close(a: Tensor, b: Tensor, rtol: float, atol: float) -> None:
    assert a.shape == b.shape
    assert torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol), (a - b).abs().max()


def test_worked_example_one_ray() -> None:
    # sigma = [1, 2, 0] over deltas [1, 0.5, 1]: alpha = [1-e^-1, 1-e^-1, 0], T = [1, e^-1, e^-2]
    t_starts = torch.tensor([0.0, 1.0, 1.5])
    t_ends = torch.tensor([1.0, 1.5, 2.5])
    sigmas = torch.tensor([1.0, 2.0, 0.0])
    ray_indices = torch.zeros(3, dtype=torch.int64)
    weights, trans, alphas = render_weights_from_density(t_starts, t_ends, sigmas, ray_indices, 1)
    e = math.exp(-1.0)
    assert torch.allclose(alphas, torch.tensor([1 - e, 1 - e, 0.0]))
    assert torch.allclose(trans, torch.tensor([1.0, e, e * e]))
    assert torch.allclose(weights, torch.tensor([1 - e, e * (1 - e), 0.0]))
    rgbs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    rgb = accumulate_along_rays(weights, rgbs, ray_indices, 1)
    assert torch.allclose(rgb, torch.tensor([[1 - e, e * (1 - e), 0.0]]))
    opacity = accumulate_along_rays(weights, None, ray_indices, 1)
    assert torch.allclose(opacity, torch.tensor([[1 - e * e]]))  # 1 - final transmittance
    depth = accumulate_along_rays(weights, ((t_starts + t_ends) / 2)[:, None], ray_indices, 1)
    assert torch.allclose(depth, torch.tensor([[0.5 * (1 - e) + 1.25 * e * (1 - e)]]))


def test_worked_example_two_rays_and_an_empty_one() -> None:
    # ray 0: two samples of alpha 0.5 each; ray 1: none; ray 2: one opaque sample
    half = math.log(2.0)  # sigma * delta = ln 2 -> alpha = 0.5
    t_starts = torch.tensor([0.0, 1.0, 0.0])
    t_ends = torch.tensor([1.0, 2.0, 1.0])
    sigmas = torch.tensor([half, half, 50.0])
    ray_indices = torch.tensor([0, 0, 2])
    weights, trans, _ = render_weights_from_density(t_starts, t_ends, sigmas, ray_indices, 3)
    assert torch.allclose(trans, torch.tensor([1.0, 0.5, 1.0]))
    assert torch.allclose(weights, torch.tensor([0.5, 0.25, 1.0]))
    opacity = accumulate_along_rays(weights, None, ray_indices, 3)[:, 0]
    assert torch.allclose(opacity, torch.tensor([0.75, 0.0, 1.0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_matches_dense_loop_random(dtype: torch.dtype) -> None:
    counts = [0, 5, 1, 0, 0, 17, 3, 64, 2, 0]  # leading, middle and trailing empty rays
    p = _packed(counts, dtype)
    ref = _dense_reference(p)
    out = _render(p)
    tol = {"rtol": 1e-4, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    for key in ("weights", "trans", "alphas", "rgb", "opacity"):
        _assert_close(out[key], ref[key], **tol)
    assert out["rgb"][[0, 3, 4, 9]].abs().max() == 0  # rays with no samples stay black


def test_exclusive_cumsum_packed_hand() -> None:
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    ray_indices = torch.tensor([1, 1, 3, 3, 3])
    out = exclusive_cumsum_packed(values, ray_indices, 5)
    assert torch.equal(out, torch.tensor([0.0, 1.0, 0.0, 3.0, 7.0]))
    empty = exclusive_cumsum_packed(torch.zeros(0), torch.zeros(0, dtype=torch.int64), 3)
    assert empty.shape == (0,)


def test_transmittance_stays_accurate_in_large_float32_batches() -> None:
    """Many rays in one packed batch: each ray's transmittance must not depend on the rays before it."""
    n, s = 100_000, 32
    sigmas = torch.rand(n * s) * 20.0
    t_starts = torch.arange(s, dtype=torch.float32).repeat(n) * 0.02
    t_ends = t_starts + 0.02
    ray_indices = torch.arange(n).repeat_interleave(s)
    trans, _ = render_transmittance_from_density(t_starts, t_ends, sigmas, ray_indices, n)
    sd = (sigmas * 0.02).double().view(n, s)
    ref = torch.exp(-(torch.cumsum(sd, 1) - sd)).view(-1)
    assert (trans.double() - ref).abs().max() < 1e-5


def test_gradients_gradcheck_float64() -> None:
    p = _packed([3, 0, 4, 1], torch.float64)
    n = int(p["n_rays"])

    def fn(sigmas: Tensor, rgbs: Tensor, t_ends: Tensor) -> tuple[Tensor, Tensor]:
        weights, _, _ = render_weights_from_density(p["t_starts"], t_ends, sigmas, p["ray_indices"], n)
        rgb = accumulate_along_rays(weights, rgbs, p["ray_indices"], n)
        opacity = accumulate_along_rays(weights, None, p["ray_indices"], n)
        return rgb, opacity

    inputs = (
        p["sigmas"].clone().requires_grad_(),
        p["rgbs"].clone().requires_grad_(),
        p["t_ends"].clone().requires_grad_(),
    )
    assert torch.autograd.gradcheck(fn, inputs)


def test_gradients_match_dense_autograd() -> None:
    """Packed gradients equal those of a dense [N, P] implementation written with cumprod."""
    n, s = 6, 9
    sigmas = (torch.rand(n, s, dtype=torch.float64) * 5).requires_grad_()
    rgbs = torch.rand(n, s, 3, dtype=torch.float64, requires_grad=True)
    deltas = torch.rand(n, s, dtype=torch.float64) * 0.3
    alpha = 1 - torch.exp(-sigmas * deltas)
    T = torch.cumprod(torch.cat([torch.ones(n, 1, dtype=torch.float64), 1 - alpha[:, :-1]], 1), 1)
    dense_rgb = ((T * alpha)[..., None] * rgbs).sum(1)
    g_dense = torch.autograd.grad(dense_rgb.sum() + dense_rgb[:, 0].pow(2).sum(), (sigmas, rgbs))

    t_starts = torch.cumsum(deltas, 1) - deltas
    ri = torch.arange(n).repeat_interleave(s)
    w, _, _ = render_weights_from_density(
        t_starts.flatten(), (t_starts + deltas).flatten(), sigmas.flatten(), ri, n
    )
    packed_rgb = accumulate_along_rays(w, rgbs.reshape(-1, 3), ri, n)
    g_packed = torch.autograd.grad(packed_rgb.sum() + packed_rgb[:, 0].pow(2).sum(), (sigmas, rgbs))
    _assert_close(packed_rgb, dense_rgb, 1e-10, 1e-12)
    for a, b in zip(g_packed, g_dense):
        _assert_close(a, b, 1e-8, 1e-10)


def _segment(p: dict[str, Tensor], keep: Tensor) -> tuple[Tensor, Tensor]:
    """Render only the samples in ``keep``: (segment color [N, 3], segment transmittance [N])."""
    n = int(p["n_rays"])
    ri = p["ray_indices"][keep]
    w, _, _ = render_weights_from_density(p["t_starts"][keep], p["t_ends"][keep], p["sigmas"][keep], ri, n)
    rgb = accumulate_along_rays(w, p["rgbs"][keep], ri, n)
    # transmittance through the segment = exp(-sum sigma delta) = 1 - opacity
    sd = torch.zeros(n, dtype=p["sigmas"].dtype).index_add(
        0, ri, p["sigmas"][keep] * (p["t_ends"][keep] - p["t_starts"][keep])
    )
    return rgb, torch.exp(-sd)


def test_composite_segments_equals_one_pass() -> None:
    counts = [7, 0, 12, 3, 1, 20]
    p = _packed(counts, torch.float64)
    full = _render(p)
    # split each ray's samples into 3 consecutive segments by position along the ray (some empty)
    order = torch.cat([torch.arange(c, dtype=torch.float64) / max(c, 1) for c in counts])
    bounds = [(-1.0, 0.3), (0.3, 0.31), (0.31, 2.0)]
    rgbs, transes = [], []
    for lo, hi in bounds:
        rgb, trans = _segment(p, (order > lo) & (order <= hi))
        rgbs.append(rgb)
        transes.append(trans)
    rgb, final_trans = composite_segments(torch.stack(rgbs), torch.stack(transes))
    _assert_close(rgb, full["rgb"], 1e-10, 1e-12)
    _assert_close(final_trans, 1 - full["opacity"], 1e-10, 1e-12)


def test_composite_segments_hand() -> None:
    # front segment: color 0.2 (weighted), T=0.5; back segment: color 0.6, T=0.25
    rgb_segments = torch.tensor([[[0.2, 0.2, 0.2]], [[0.6, 0.6, 0.6]]])
    trans_segments = torch.tensor([[0.5], [0.25]])
    rgb, trans = composite_segments(rgb_segments, trans_segments)
    assert torch.allclose(rgb, torch.tensor([[0.5, 0.5, 0.5]]))  # 0.2 + 0.5 * 0.6
    assert torch.allclose(trans, torch.tensor([0.125]))


def _distortion_loop(weights: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor, n_rays: int
                     ) -> Tensor:
    """mip-NeRF 360's distortion by its definition: the double sum over each ray's samples."""
    out = []
    for r in range(n_rays):
        sel = ray_indices == r
        w, t0, t1 = weights[sel], t_starts[sel], t_ends[sel]
        mid = 0.5 * (t0 + t1)
        pairs = (w[:, None] * w[None] * (mid[:, None] - mid[None]).abs()).sum()
        out.append(pairs + (w**2 * (t1 - t0)).sum() / 3)
    return torch.stack(out)


def test_distortion_matches_the_double_sum_values_and_gradients() -> None:
    torch.manual_seed(11)
    p = _packed([5, 0, 1, 17, 3])
    weights = torch.rand(p["t_starts"].numel(), dtype=torch.float64, requires_grad=True)
    fast = distortion_packed(weights, p["t_starts"], p["t_ends"], p["ray_indices"], 5)
    ref = _distortion_loop(weights, p["t_starts"], p["t_ends"], p["ray_indices"], 5)
    assert float(ref.detach()[[0, 2, 3, 4]].min()) > 1e-3 and float(ref.detach()[1]) == 0.0
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=0.0)
    g_fast, = torch.autograd.grad(fast @ torch.arange(1.0, 6.0, dtype=torch.float64), weights)
    g_ref, = torch.autograd.grad(ref @ torch.arange(1.0, 6.0, dtype=torch.float64), weights)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-10, atol=1e-12)


def test_distortion_is_lower_for_weight_in_one_place() -> None:
    """One peak beats the same total weight split between two distant places (what pulls floaters in)."""
    t0 = torch.arange(8, dtype=torch.float64) * 0.1
    rays = torch.zeros(8, dtype=torch.long)
    peak = torch.zeros(8, dtype=torch.float64)
    peak[3] = 1.0
    split = torch.zeros(8, dtype=torch.float64)
    split[[0, 7]] = 0.5
    d_peak, d_split = (distortion_packed(w, t0, t0 + 0.1, rays, 1) for w in (peak, split))
    assert float(d_peak) == pytest.approx(0.1 / 3) and float(d_split) == pytest.approx(0.35 + 0.05 / 3)
