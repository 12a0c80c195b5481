"""The image student (student.image_model): block rays, crops, sizes."""

from __future__ import annotations

import math

import pytest
import torch

from core.cameras import look_at
from core.rays import generate_rays_from_pixels, ray_aabb_intersect
from student.image_model import ImageStudent, ImageStudentConfig
from student.ray_map import block_centers, block_rays, box_points


def _cameras(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c2ws, Ks = [], []
    for _ in range(n):
        eye = torch.nn.functional.normalize(torch.randn(3, generator=g), dim=0) * 4
        c2ws.append(look_at(eye[None], torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))[0])
        f = 40 + 20 * torch.rand((), generator=g)
        Ks.append(torch.tensor([[f, 0, 24 + torch.rand((), generator=g)], [0, f, 20.0], [0, 0, 1]]))
    return torch.stack(c2ws), torch.stack(Ks)


def test_block_rays_equal_core_rays_through_the_block_centres() -> None:
    c2w, K = _cameras(3)
    centers = block_centers(5, 6, scale=8)
    o, d = block_rays(c2w, K, centers)
    for b in range(3):
        uv = centers.reshape(-1, 2)
        ro, rd = generate_rays_from_pixels(c2w[b], K[b], uv[:, 0], uv[:, 1])
        torch.testing.assert_close(d[b].reshape(-1, 3), rd, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(o[b].expand(5, 6, 3).reshape(-1, 3), ro, rtol=1e-6, atol=1e-6)


def test_a_crops_rays_equal_the_full_views_rays_at_those_blocks() -> None:
    c2w, K = _cameras(2, seed=1)
    full = block_rays(c2w, K, block_centers(10, 12, scale=4))
    crop = block_rays(c2w, K, block_centers(3, 5, scale=4, top=4, left=6))
    torch.testing.assert_close(crop[0], full[0], rtol=0, atol=0)  # the camera centres
    torch.testing.assert_close(crop[1], full[1][:, 4:7, 6:11], rtol=0, atol=0)


def test_box_points_lie_on_the_ray_inside_the_box() -> None:
    c2w, K = _cameras(2, seed=2)
    o, d = block_rays(c2w, K, block_centers(6, 6, scale=8))
    aabb = torch.tensor([-1.0, -0.5, -0.8, 1.0, 0.7, 0.9])
    frac = (torch.arange(4) + 0.5) / 4
    pts = box_points(o, d, aabb, frac)  # [B, h, w, K, 3]
    o = o.expand_as(d)
    t_near, t_far, hit = ray_aabb_intersect(o.reshape(-1, 3), d.reshape(-1, 3), aabb)
    world = (pts + 1) / 2 * (aabb[3:] - aabb[:3]) + aabb[:3]
    t = t_near[:, None] + (t_far - t_near)[:, None] * frac
    want = o.reshape(-1, 1, 3) + d.reshape(-1, 1, 3) * t[..., None]
    assert hit.any() and (~hit).any()
    torch.testing.assert_close(world.reshape(-1, 4, 3)[hit], want[hit], rtol=1e-4, atol=1e-4)
    assert (pts.reshape(-1, 4, 3)[hit].abs() <= 1 + 1e-4).all()


@pytest.mark.parametrize("scale, size", [(2, (10, 6)), (4, (100, 100)), (8, (37, 50))])
def test_any_output_size_is_drawn_and_cut(scale: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    cfg = ImageStudentConfig(scale=scale, n_points=3, channels=4, resolutions=[8], width=8, depth=1, tail=4)
    model = ImageStudent(cfg, [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    c2w, K = _cameras(2)
    out = model.render(c2w, K, *size)
    assert out.shape == (2, *size, 3) and torch.isfinite(out).all()
    h, w = model.blocks(*size)
    assert (h, w) == (math.ceil(size[0] / scale), math.ceil(size[1] / scale))
    # the image is the top-left of the block grid's image: the same numbers as the uncut forward
    full = model(c2w, K, block_centers(h, w, scale))
    torch.testing.assert_close(out, full[:, :size[0], :size[1]])


@pytest.mark.parametrize("changes, message", [({"scale": 3}, "scale=3"), ({"scale": 1}, "scale=1"),
                                              ({"activation": "tanh"}, "activation=tanh"),
                                              ({"width": 0}, "width=0")])
def test_bad_shapes_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImageStudent(ImageStudentConfig(**changes), [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
