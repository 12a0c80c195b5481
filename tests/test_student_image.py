"""The image student (student.image_model): block rays, crops, sizes."""

from __future__ import annotations

import math

import pytest
import torch

from core.cameras import look_at
from core.ndc import NDCSpace, average_pose
from core.rays import generate_rays_from_pixels, ray_aabb_intersect
from student.image_model import ImageStudent, ImageStudentConfig
from student.ray_map import MISS_AT, block_centers, block_rays, box_coords, box_segment, pixel_centers


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


def test_box_coords_lie_on_the_ray_inside_the_box() -> None:
    c2w, K = _cameras(2, seed=2)
    o, d = block_rays(c2w, K, block_centers(6, 6, scale=8))
    aabb = torch.tensor([-1.0, -0.5, -0.8, 1.0, 0.7, 0.9])
    frac = (torch.arange(4) + 0.5) / 4
    coords = box_coords(o, d, *box_segment(o, d, aabb), aabb, frac)  # 3 x [B, K, h, w]
    pts = torch.stack(coords, dim=-1).permute(0, 2, 3, 1, 4)  # [B, h, w, K, 3]
    o = o.expand_as(d)
    t_near, t_far, hit = ray_aabb_intersect(o.reshape(-1, 3), d.reshape(-1, 3), aabb)
    world = (pts + 1) / 2 * (aabb[3:] - aabb[:3]) + aabb[:3]
    t = t_near[:, None] + (t_far - t_near)[:, None] * frac
    want = o.reshape(-1, 1, 3) + d.reshape(-1, 1, 3) * t[..., None]
    assert hit.any() and (~hit).any()
    torch.testing.assert_close(world.reshape(-1, 4, 3)[hit], want[hit], rtol=1e-4, atol=1e-4)
    assert (pts.reshape(-1, 4, 3)[hit].abs() <= 1 + 1e-4).all()
    # a miss reads its planes a box width outside, where they are zero
    assert (pts.reshape(-1, 4, 3)[~hit] == MISS_AT).all()


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


@pytest.mark.parametrize("scale, rows, cols, top, left", [(2, 3, 4, 0, 0), (4, 2, 5, 3, 1), (8, 1, 1, 2, 7)])
def test_pixel_centers_are_the_blocks_pixels_in_depth_to_space_order(scale: int, rows: int, cols: int,
                                                                     top: int, left: int) -> None:
    pix = pixel_centers(block_centers(rows, cols, scale, top, left), scale)
    want = block_centers(rows * scale, cols * scale, 1, top * scale, left * scale)
    torch.testing.assert_close(pix, want, rtol=0, atol=0)


def _detail_student(scale: int = 4) -> ImageStudent:
    torch.manual_seed(0)
    cfg = ImageStudentConfig(scale=scale, n_points=3, channels=4, resolutions=[8], width=8, depth=1, tail=4,
                             detail_channels=3, detail_resolution=16, head=6)
    with torch.no_grad():
        model = ImageStudent(cfg, [-1.0, -0.9, -1.1, 1.0, 1.2, 0.8])
        assert model.detail is not None
        model.detail.planes.planes[0].normal_()  # non-trivial features, so the reference can differ
    return model


def test_detail_reads_each_pixels_own_ray_at_its_predicted_depth() -> None:
    model = _detail_student().eval()
    assert model.detail is not None
    c2w, K = _cameras(2, seed=3)
    centers = block_centers(3, 4, scale=4, top=1, left=2)
    seen: dict[str, torch.Tensor] = {}
    model.detail.planes.register_forward_hook(lambda _m, args, out: seen.update(pts=args[0], feats=out))
    rgb, depth = model.forward_with_depth(c2w, K, centers)
    assert depth is not None and depth.shape == (2, 12, 16) and rgb.shape == (2, 12, 16, 3)
    # the block ray's segment bounds each of its pixels' depths
    o, d = block_rays(c2w, K, centers)
    t_near, t_far, _ = ray_aabb_intersect(o.expand_as(d).reshape(-1, 3), d.reshape(-1, 3), model.aabb)
    blocks = depth.reshape(2, 3, 4, 4, 4).permute(0, 1, 3, 2, 4).reshape(2 * 12, 16)  # [B*h*w, s*s]
    assert (blocks >= t_near.clamp(min=0)[:, None] - 1e-4).all() and (blocks <= t_far[:, None] + 1e-4).all()
    # each pixel's point: core.rays' ray through the pixel centre, at its depth, in the box frame
    uv = block_centers(12, 16, 1, 4, 8).reshape(-1, 2)
    aabb = model.aabb
    for b in range(2):
        ro, rd = generate_rays_from_pixels(c2w[b], K[b], uv[:, 0], uv[:, 1])
        world = ro + rd * depth[b].reshape(-1, 1)
        want = (world - aabb[:3]) / (aabb[3:] - aabb[:3]) * 2 - 1
        torch.testing.assert_close(seen["pts"][b].reshape(-1, 3), want, rtol=1e-4, atol=1e-4)
    assert seen["feats"].abs().max() > 0.1


def test_detail_gradients_reach_the_planes_and_the_depth_head() -> None:
    model = _detail_student().train()
    assert model.detail is not None
    c2w, K = _cameras(2, seed=4)
    rgb, depth = model.forward_with_depth(c2w, K, block_centers(3, 3, scale=4))
    assert depth is not None
    (rgb.square().mean() + depth.mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_eval_clips_colors_and_training_does_not() -> None:
    model = _detail_student()
    with torch.no_grad():
        model.detail.out.bias.fill_(3.0)  # type: ignore[union-attr]
    c2w, K = _cameras(1, seed=5)
    assert model.train().render(c2w, K, 8, 8).min() > 1.0
    assert torch.equal(model.eval().render(c2w, K, 8, 8), torch.ones(1, 8, 8, 3))


@pytest.mark.parametrize("scale, kernels", [(4, []), (8, []), (8, [3, 1, 1]), (2, [])])
def test_fused_last_stages_draw_the_same_image(scale: int, kernels: list[int]) -> None:
    """The export's tail (the last 1x1 stage folded into the stage before, one DepthToSpace(4)) gives the
    unfused decoder's colors; a single stage, a 3x3 last stage or a detail head is left as it is."""
    torch.manual_seed(scale)
    cfg = ImageStudentConfig(scale=scale, n_points=3, channels=4, resolutions=[8], width=16, depth=1, tail=6,
                             tail_kernels=kernels)
    student = ImageStudent(cfg, [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]).eval()
    x = torch.randn(2, 16, 5, 7)
    want = student.decoder.upsample(x)
    assert student.decoder.fuse_last_stages() == (scale > 2)
    got = student.decoder.upsample(x)
    assert got.shape == want.shape == (2, 3, 5 * scale, 7 * scale) and want.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    three = ImageStudent(ImageStudentConfig(scale=4, n_points=2, channels=2, resolutions=[4], width=8,
                                            tail=4, tail_kernels=[3, 3]), [-1.0] * 3 + [1.0] * 3)
    detail = ImageStudent(ImageStudentConfig(scale=4, n_points=2, channels=2, resolutions=[4], width=8,
                                             tail=4, detail_channels=2), [-1.0] * 3 + [1.0] * 3)
    assert not three.decoder.fuse_last_stages() and not detail.decoder.fuse_last_stages()


def _forward_rig(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, NDCSpace]:
    """``n`` cameras of a forward-facing rig (looking along +z, small moves and turns) and its NDC frame."""
    g = torch.Generator().manual_seed(seed)
    eyes = torch.randn(n, 3, generator=g) * torch.tensor([0.3, 0.2, 0.1])
    targets = eyes + torch.tensor([0.0, 0.0, 4.0]) + torch.randn(n, 3, generator=g) * 0.4
    c2w = look_at(eyes, targets, torch.tensor([0.0, -1.0, 0.0]))
    K = torch.tensor([[30.0, 0, 24.3], [0, 31.0, 17.8], [0, 0, 1]]).expand(n, 3, 3).clone()
    space = NDCSpace(c2w=average_pose(c2w).tolist(), scale=[1.3, 1.7], near=0.9)
    return c2w, K, space


def test_ndc_ray_map_equals_core_ndc() -> None:
    """The graph's NDC rays are :func:`core.ndc.to_ndc`'s (origins on the near plane, unit directions)."""
    from core.ndc import to_ndc
    from student.ray_map import ndc_ray_map

    c2w, K, space = _forward_rig(3, seed=5)
    centers = block_centers(4, 7, scale=8)
    o, d = block_rays(c2w, K, centers)
    o_ndc, d_ndc = ndc_ray_map(o, d, space)
    assert o_ndc.shape == d_ndc.shape == (3, 4, 7, 3)
    for b in range(3):
        want_o, want_d = to_ndc(o[b].expand_as(d[b]).reshape(-1, 3), d[b].reshape(-1, 3), space)
        torch.testing.assert_close(o_ndc[b].reshape(-1, 3), want_o, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(d_ndc[b].reshape(-1, 3), want_d, rtol=1e-5, atol=1e-5)
    assert (o_ndc[..., 2] == -1).all() and (d_ndc[..., 2] > 0).all()


def test_a_forward_facing_students_points_are_its_rays_ndc_points_spread_in_disparity() -> None:
    """With an NDC frame the student reads its planes at the NDC points of each block ray (between the
    near plane and infinity, evenly in NDC depth), inside the NDC box, and draws finite colors."""
    from core.ndc import ndc_points

    c2w, K, space = _forward_rig(2, seed=6)
    cfg = ImageStudentConfig(scale=4, n_points=4, channels=4, resolutions=[8], width=8, depth=1, tail=4)
    box = [-3.0, -3.0, -1.0, 3.0, 3.0, 1.0]
    model = ImageStudent(cfg, box, space).eval()
    seen: dict[str, tuple] = {}

    def read(coords: tuple) -> torch.Tensor:  # the planes' read, recording the points it is given
        seen["coords"] = coords
        return torch.zeros(2, model.encoding.out_dim, 4 * 3, 5)

    model.encoding.read = read  # type: ignore[method-assign]
    centers = block_centers(3, 5, scale=4)
    model(c2w, K, centers)
    x, y, z = (c.reshape(2, 4, 3, 5) for c in seen["coords"])  # normalised to the box's [-1, 1]^3
    lo, hi = torch.tensor(box[:3]), torch.tensor(box[3:])
    pts = (torch.stack((x, y, z), dim=-1) + 1) / 2 * (hi - lo) + lo  # [B, K, h, w, 3] NDC points
    assert torch.allclose(pts[..., 2], ((torch.arange(4) + 0.5) / 4 * 2 - 1)[None, :, None, None], atol=1e-4)
    o, d = block_rays(c2w, K, centers)
    ref, scale = torch.tensor(space.c2w), torch.tensor(space.scale)
    for b in range(2):
        # the world point of each NDC depth: the ray at that disparity from the reference camera
        ray_z = (d[b].reshape(-1, 3) @ ref[:3, :3])[:, 2]  # depth slope in the reference camera
        oz = ((o[b].reshape(-1, 3) - ref[:3, 3]) @ ref[:3, :3])[:, 2]
        depth = 2 * space.near / (1 - pts[b, ..., 2].reshape(4, -1))  # NDC z -> reference depth
        world = o[b].reshape(1, 1, 3) + d[b].reshape(1, -1, 3) * ((depth - oz) / ray_z)[..., None]
        got = ndc_points(world.reshape(-1, 3), ref, scale, space.near).reshape(4, -1, 3)
        torch.testing.assert_close(got, pts[b].reshape(4, -1, 3), rtol=1e-4, atol=1e-4)


def test_a_forward_facing_student_refuses_a_detail_head() -> None:
    _, _, space = _forward_rig(1, seed=7)
    cfg = ImageStudentConfig(detail_channels=4)
    with pytest.raises(ValueError, match="model.image.detail_channels.*forward-facing"):
        ImageStudent(cfg, [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], space)
