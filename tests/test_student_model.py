"""Student encoding and network: hand-worked values, shapes, FLOP count, checkpoint round trip."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import pytest
import torch

from core.checkpoint import save_checkpoint
from core.errors import CheckpointError, UserError
from core.rig import camera_rig
from core.scene_facts import SceneFacts
from student.checkpoint import load_student, save_student
from student.encoding import RayEncoder, positional_encoding, ray_points, ray_segment, segment_points
from student.model import R2LStudent, StudentModelConfig, count_linear_flops, flops_per_ray
from testing.scenes.rigs import ring_poses

AABB = torch.tensor([-2.0, -2.0, -2.0, 2.0, 2.0, 2.0])


def test_ray_points_are_bin_centres_in_eval() -> None:
    rays_o = torch.tensor([[0.0, 0.0, -3.0], [1.0, 2.0, 3.0]])
    rays_d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    pts = ray_points(rays_o, rays_d, near=1.0, far=5.0, n_points=4)
    # bins of [1, 5] of width 1: centres at t = 1.5, 2.5, 3.5, 4.5
    assert torch.allclose(pts[0, :, 2], torch.tensor([-1.5, -0.5, 0.5, 1.5]))
    assert torch.allclose(pts[1], torch.tensor([[2.5, 2, 3], [3.5, 2, 3], [4.5, 2, 3], [5.5, 2, 3]]))


def test_jittered_points_stay_in_their_bins() -> None:
    rays_o = torch.zeros(1000, 3)
    rays_d = torch.tensor([0.0, 0.0, 1.0]).expand(1000, 3)
    t = ray_points(rays_o, rays_d, 1.0, 5.0, 4, jitter=True)[..., 2]  # [N, K]
    lo = torch.arange(4.0) + 1.0
    assert ((t >= lo) & (t <= lo + 1)).all()
    assert t.std(0).min() > 0.2  # really random (uniform in a unit bin: std 0.29)


def test_positional_encoding_values() -> None:
    x = torch.tensor([[0.25, -1.0]])
    enc = positional_encoding(x, n_freqs=2)
    expected = [0.25, -1.0, math.sin(0.25), math.sin(0.5), math.sin(-1.0), math.sin(-2.0),
                math.cos(0.25), math.cos(0.5), math.cos(-1.0), math.cos(-2.0)]
    assert torch.allclose(enc, torch.tensor([expected]), atol=1e-6)


def test_encoder_normalises_by_the_box_and_has_the_paper_size() -> None:
    enc = RayEncoder(AABB + 1.0, near=1.0, far=3.0, n_points=16, n_freqs=10, ray_range="near_far")
    assert enc.out_dim == 16 * 3 * 21 == 1008
    rays_o = torch.tensor([[1.0, 1.0, -1.0]])  # the box is [-1, 3]^3, centre (1, 1, 1), half-size 2
    rays_d = torch.tensor([[0.0, 0.0, 1.0]])
    out, hit = enc(rays_o, rays_d)
    assert out.shape == (1, 1008) and hit.tolist() == [True]
    z = out[0, :48].reshape(16, 3)[:, 2]  # the raw (normalised) coordinates come first
    t = 1.0 + 2.0 * (torch.arange(16) + 0.5) / 16
    assert torch.allclose(z, (-1.0 + t - 1.0) / 2.0, atol=1e-6)


def test_ray_segment_clips_to_the_box_by_hand() -> None:
    box = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    rays_o = torch.tensor([[0.0, 0.0, -5.0], [0.5, 0.0, -5.0], [5.0, 5.0, -5.0], [0.0, 0.0, -1.5]])
    rays_d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    start, span, hit = ray_segment(rays_o, rays_d, box, near=1.0, far=10.0, clip_to_box=True)
    assert hit.tolist() == [True, True, False, True]
    # enters the box at t = 4 (z = -1), leaves at t = 6 (z = 1)
    assert torch.allclose(start[0], torch.tensor([0.0, 0.0, -1.0]))
    assert torch.allclose(span[0], torch.tensor([0.0, 0.0, 2.0]))
    assert torch.allclose(start[1], torch.tensor([0.5, 0.0, -1.0]))
    # starts inside the box: near (t = 1, z = -0.5) clips the entry
    assert torch.allclose(start[3], torch.tensor([0.0, 0.0, -0.5]))
    assert torch.allclose(span[3], torch.tensor([0.0, 0.0, 1.5]))
    assert span[2].abs().max() == 0 and start[2].abs().max() < 20  # a miss: bounded, zero length
    start, span, _ = ray_segment(rays_o, rays_d, box, near=1.0, far=10.0, clip_to_box=False)
    assert torch.allclose(start, rays_o + rays_d) and torch.allclose(span, 9.0 * rays_d)
    pts = segment_points(start, span, 3)
    assert torch.allclose(pts[:, 1], rays_o + 5.5 * rays_d)  # the middle bin's centre


def test_box_encoder_puts_every_point_inside_the_box() -> None:
    box = torch.tensor([-0.5, -1.0, -0.2, 1.5, 0.5, 0.8])
    enc = RayEncoder(box, near=0.5, far=20.0, n_points=8, n_freqs=0)
    gen = torch.Generator().manual_seed(0)
    rays_o = torch.nn.functional.normalize(torch.randn(512, 3, generator=gen), dim=-1) * 6
    size = box[3:] - box[:3]
    target = box[:3] + size * (torch.rand(512, 3, generator=gen) * 1.4 - 0.2)  # some outside the box
    rays_d = torch.nn.functional.normalize(target - rays_o, dim=-1)
    for jitter in (False, True):
        x, hit = enc(rays_o, rays_d, jitter=jitter)  # n_freqs = 0: the normalised points themselves
        assert 0.2 < hit.float().mean() < 0.95
        assert x[hit].abs().max() <= 1.0 + 1e-5


def test_rays_that_miss_the_box_show_the_background_and_get_no_gradient() -> None:
    box = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    model = R2LStudent(StudentModelConfig(n_points=4, n_freqs=2, width=16, depth=4), box, 1.0, 10.0,
                       background=(0.2, 0.4, 0.6))
    rays_o = torch.tensor([[0.0, 0.0, -5.0], [5.0, 5.0, -5.0]])
    rays_d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    rgb = model(rays_o, rays_d)
    assert torch.allclose(rgb[1], torch.tensor([0.2, 0.4, 0.6])) and not torch.allclose(rgb[0], rgb[1])
    rgb[1].sum().backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.parameters())


@pytest.mark.parametrize("depth, width", [(4, 16), (16, 128), (88, 256)])
def test_flop_formula_matches_the_linear_layers(depth: int, width: int) -> None:
    cfg = StudentModelConfig(n_points=16, n_freqs=10, width=width, depth=depth)
    model = R2LStudent(cfg, AABB, 1.0, 5.0)
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert n_linear == depth
    assert flops_per_ray(cfg) == count_linear_flops(model)


def test_paper_model_size() -> None:
    cfg = StudentModelConfig()  # 88 layers, width 256, K = 16
    model = R2LStudent(cfg, AABB, 1.0, 5.0)
    n_params = sum(p.numel() for p in model.parameters())
    assert 5.7e6 < n_params < 6.0e6
    assert abs(flops_per_ray(cfg) / 1e6 - 11.8) < 0.1


def test_forward_shapes_jitter_only_in_training() -> None:
    model = R2LStudent(StudentModelConfig(n_points=4, n_freqs=2, width=16, depth=4), AABB, 1.0, 5.0)
    rays_o = torch.randn(7, 3) * 0.3  # inside the box: every ray meets it
    rays_d = torch.nn.functional.normalize(torch.randn(7, 3), dim=-1)
    model.eval()
    a, b = model(rays_o, rays_d), model(rays_o, rays_d)
    assert a.shape == (7, 3) and torch.equal(a, b) and ((a > 0) & (a < 1)).all()
    model.train()
    assert not torch.equal(model(rays_o, rays_d), model(rays_o, rays_d))


def _facts(**change: object) -> SceneFacts:
    facts = SceneFacts(aabb=AABB.tolist(), content_aabb=AABB.tolist(), near=1.0, far=5.0, image_size=[8, 8],
                       K=[[10.0, 0.0, 4.0], [0.0, 10.0, 4.0], [0.0, 0.0, 1.0]], scene_name="s",
                       background=[1.0, 1.0, 1.0], rig=camera_rig(ring_poses(6)))
    return dataclasses.replace(facts, **change)  # type: ignore[arg-type]


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = R2LStudent(StudentModelConfig(n_points=4, n_freqs=2, width=16, depth=6), AABB, 1.0, 5.0).eval()
    save_student(tmp_path / "s.ckpt", model, _facts())
    loaded, facts = load_student(tmp_path / "s.ckpt")
    rays_o, rays_d = torch.randn(5, 3), torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    assert facts == _facts() and torch.equal(loaded(rays_o, rays_d), model(rays_o, rays_d))
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        load_student(tmp_path / "bad.ckpt")
    save_student(tmp_path / "far.ckpt", model, _facts(near=6.0))
    with pytest.raises(CheckpointError, match=r"far.ckpt: config.scene: scene near/far"):
        load_student(tmp_path / "far.ckpt")


def test_checkpoint_of_a_plain_scene_dict_loads(tmp_path: Path) -> None:
    """Checkpoints written before SceneFacts hold a plain dict of the same keys (no rig) in config.scene."""
    model = R2LStudent(StudentModelConfig(n_points=4, n_freqs=2, width=16, depth=6), AABB, 1.0, 5.0).eval()
    old = {k: v for k, v in _facts().to_dict().items() if k not in ("rig", "scene_kind", "occupancy")}
    config = {"model": dataclasses.asdict(model.cfg), "scene": old}
    save_checkpoint(tmp_path / "plain.ckpt", "student", model.state_dict(), config)
    _, facts = load_student(tmp_path / "plain.ckpt")
    assert facts == _facts(rig=None)
    del old["content_aabb"]  # a student of an even older layout
    save_checkpoint(tmp_path / "old.ckpt", "student", model.state_dict(), config)
    with pytest.raises(CheckpointError, match="old.ckpt.*older version"):
        load_student(tmp_path / "old.ckpt")
    del old["K"]
    with pytest.raises(UserError, match=r"x.ckpt: scene facts missing \['K', 'content_aabb'\]"):
        SceneFacts.from_dict(old, "x.ckpt")


def test_student_never_imports_teacher() -> None:
    """The student reads shards only: no module of ``student/`` imports ``teacher`` or ``data_gen``."""
    root = Path(__file__).resolve().parents[1] / "student"
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("teacher", "data_gen")]
    assert list(root.rglob("*.py")) and not offenders, offenders


def test_learning_rate_schedule() -> None:
    from student.lit_module import warmup_cosine

    assert warmup_cosine(0, 10, 110, 0.01) == pytest.approx(0.01)
    assert warmup_cosine(10, 10, 110, 0.01) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110, 0.01) == pytest.approx(0.505)
    assert warmup_cosine(110, 10, 110, 0.01) == pytest.approx(0.01)
    # a time-limited stage: half of the budget spent at step 20 means half-way through the decay
    assert warmup_cosine(20, 10, 10_000, 0.01, time_fraction=0.5) == pytest.approx(0.505)


# ---- the learned (hash) encoding ------------------------------------------------------------------

def _hash_cfg(backend: str = "auto", point_freqs: int = -1) -> StudentModelConfig:
    from student.encoding import GridConfig

    grid = GridConfig(n_levels=3, n_features=2, log2_hashmap_size=12, base_resolution=4, max_resolution=32,
                      point_freqs=point_freqs, backend=backend)
    return StudentModelConfig(encoding="hash", n_points=6, width=16, depth=4, grid=grid)


def _edge_rays(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays from outside the box towards random targets: inside, on faces and corners, and misses."""
    rays_o = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1) * 4.0
    lo, hi = AABB[:3], AABB[3:]
    target = lo + (hi - lo) * (torch.rand(n, 3, generator=gen) * 1.6 - 0.3)  # some beyond the box: misses
    corner = torch.rand(n // 8, 3, generator=gen) < 0.5
    target[: n // 8] = torch.where(corner, lo, hi)  # the box's corners
    rays_d = torch.nn.functional.normalize(target - rays_o, dim=-1)
    return rays_o, rays_d


@pytest.mark.parametrize("point_freqs", [-1, 2])
def test_hash_encoding_matches_a_plain_reference(point_freqs: int) -> None:
    from cuda.hashgrid_ref import hash_encode_ref

    torch.manual_seed(0)
    model = R2LStudent(_hash_cfg("torch", point_freqs), AABB, 1.0, 10.0)
    enc = model.encoder
    with torch.no_grad():
        enc.grid.params.normal_()
    rays_o, rays_d = _edge_rays(500, torch.Generator().manual_seed(0))
    feats, hit = enc(rays_o, rays_d)
    assert 0 < int(hit.sum()) < 500  # hits and misses
    start, span, hit_ref = ray_segment(rays_o, rays_d, AABB, 1.0, 10.0, clip_to_box=True)
    half = (AABB[3:] - AABB[:3]) / 2
    centre = (AABB[3:] + AABB[:3]) / 2
    pts = segment_points((start - centre) / half, span / half, 6)  # [N, K, 3] in [-1, 1]
    unit = ((pts + 1) / 2).clamp(0, 1).reshape(-1, 3)
    ref = hash_encode_ref(unit, enc.grid.params, enc.grid.spec).reshape(500, -1)
    if point_freqs >= 0:
        ref = torch.cat([ref, positional_encoding(pts.flatten(1), point_freqs)], -1)
    assert torch.equal(hit, hit_ref)
    assert feats.shape == (500, enc.out_dim)
    assert (feats - ref).abs().max() / ref.abs().max() < 1e-5


def test_hash_student_kernel_gradients_match_the_reference_backend() -> None:
    """Training runs on our kernel: outputs and gradients (table and MLP) as with the PyTorch reference."""
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(1)
    ref_model = R2LStudent(_hash_cfg("torch"), AABB, 1.0, 10.0)
    with torch.no_grad():
        ref_model.encoder.grid.params.normal_(0.0, 0.5, generator=gen)
    kernel_model = R2LStudent(_hash_cfg("cpu"), AABB, 1.0, 10.0)
    kernel_model.load_state_dict(ref_model.state_dict())
    assert kernel_model.encoder.grid.backend == "cpu"
    rays_o, rays_d = _edge_rays(800, gen)
    target = torch.rand(800, 3, generator=gen)
    outs = []
    for m in (ref_model, kernel_model):
        m.eval()
        out = m(rays_o, rays_d)
        ((out - target) ** 2).mean().backward()
        outs.append(out.detach())
    assert (outs[1] - outs[0]).abs().max() < 1e-5
    for (name, p_ref), p_k in zip(ref_model.named_parameters(), kernel_model.parameters()):
        assert p_ref.grad is not None and p_k.grad is not None
        scale = p_ref.grad.abs().max()
        assert scale > 0, name
        assert (p_k.grad - p_ref.grad).abs().max() / scale < 1e-4, name


@pytest.mark.parametrize("point_freqs", [-1, 0, 3])
def test_hash_flop_and_size_accounting_matches_the_layers(point_freqs: int) -> None:
    from student.model import encoding_dim, layer_shapes, lookups_per_ray, table_params

    cfg = _hash_cfg(point_freqs=point_freqs)
    model = R2LStudent(cfg, AABB, 1.0, 5.0)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == layer_shapes(cfg)
    assert encoding_dim(cfg) == model.encoder.out_dim
    assert flops_per_ray(cfg) == count_linear_flops(model)
    assert table_params(cfg) == model.encoder.grid.params.numel()
    assert lookups_per_ray(cfg) == 8 * cfg.n_points * cfg.grid.n_levels


def test_unknown_encoding_is_one_clear_error() -> None:
    from core.errors import UserError

    with pytest.raises(UserError, match="model.encoding=triplane: must be one of"):
        R2LStudent(StudentModelConfig(encoding="triplane"), AABB, 1.0, 5.0)
