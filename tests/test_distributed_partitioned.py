"""NeRF-XL partitioned teacher on 2 and 4 gloo processes (loopback) against single-process references.

The reference for rendering and gradients is ordinary volume rendering in one pass over the union of
all regions' samples (no segments, no compositing); the in-process :class:`PartitionedTeacher` is
checked against it too. Workers load the same float64 parameters, render the same rays, and save
their outputs for the parent to compare.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from core.rendering import accumulate_along_rays, render_weights_from_density
from cuda.backend import HashGridConfig
from pipeline.run import free_port
from teacher.field import FieldConfig
from teacher.marching import march_rays
from teacher.model import TeacherModelConfig
from teacher.occupancy import OccupancyConfig
from teacher.render import MarchConfig
from teacher.xl.geometry import median_split_boxes, ray_segments, sample_points_along_rays
from teacher.xl.model import PartitionedTeacher, build_region

AABB = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
NEAR, FAR = 0.5, 10.0
N_RAYS = 96


def tiny_model_config() -> TeacherModelConfig:
    """A few-thousand-parameter teacher; no early termination so the union reference is exact."""
    return TeacherModelConfig(
        field=FieldConfig(grid=HashGridConfig(n_levels=4, n_features=2, log2_hashmap_size=10,
                                              base_resolution=4, max_resolution=32, backend="torch"),
                          hidden_dim=16, geo_dim=8),
        occupancy=OccupancyConfig(resolution=8, update_every=2, warmup_steps=2, chunk=4096),
        render=MarchConfig(steps_per_diagonal=48, min_transmittance=0.0, chunk=1 << 16, jitter=False),
    )


def make_rays(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rays from a sphere of radius 3 towards points of the box, plus target colors ``[N, 3]``."""
    gen = torch.Generator().manual_seed(seed)
    rays_o = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1) * 3
    target = (torch.rand(n, 3, generator=gen) - 0.5) * 1.6
    rays_d = torch.nn.functional.normalize(target - rays_o, dim=-1)
    return rays_o, rays_d, torch.rand(n, 3, generator=gen)


def make_teacher(k: int, seed: int = 0) -> PartitionedTeacher:
    """A partitioned teacher with random (non-trivial) weights and partly empty occupancy grids."""
    torch.manual_seed(seed)
    rays_o, rays_d, _ = make_rays(256, seed + 1)
    boxes = median_split_boxes(sample_points_along_rays(rays_o, rays_d, AABB, 8), AABB, k)
    teacher = PartitionedTeacher(tiny_model_config(), boxes, AABB, NEAR, FAR)
    with torch.no_grad():
        for region in teacher.regions:
            region.field.grid.params.normal_(0.0, 0.5)
            region.occupancy.binary.copy_(torch.rand(region.occupancy.binary.shape) < 0.8)
    return teacher


def union_render(teacher: PartitionedTeacher, rays_o: torch.Tensor, rays_d: torch.Tensor,
                 background: torch.Tensor) -> dict[str, torch.Tensor]:
    """Single-pass volume rendering over the union of every region's samples (the reference)."""
    n = rays_o.shape[0]
    t_in, t_out = ray_segments(rays_o, rays_d, teacher.boxes, NEAR, FAR)
    parts = []
    for k, region in enumerate(teacher.regions):
        s = march_rays(rays_o, rays_d, t_in[k], t_out[k], teacher.step_size, region.occupancy.binary,
                       region.field.aabb)
        sigmas, rgbs = region.field(s.positions(rays_o, rays_d), rays_d[s.ray_indices])
        parts.append((s.ray_indices, s.t_starts, s.t_ends, sigmas, rgbs))
    ray_indices, t_starts, t_ends, sigmas, rgbs = (torch.cat(p) for p in zip(*parts))
    order = torch.argsort(ray_indices.double() * 1e3 + t_starts.double(), stable=True)  # by ray, then t
    ray_indices, t_starts, t_ends, sigmas, rgbs = (
        v[order] for v in (ray_indices, t_starts, t_ends, sigmas, rgbs)
    )
    weights, _, _ = render_weights_from_density(t_starts, t_ends, sigmas, ray_indices, n)
    opacity = accumulate_along_rays(weights, None, ray_indices, n)[:, 0]
    depth = accumulate_along_rays(weights, ((t_starts + t_ends) / 2)[:, None], ray_indices, n)[:, 0]
    rgb = accumulate_along_rays(weights, rgbs, ray_indices, n) + (1 - opacity)[:, None] * background
    return {"rgb": rgb, "depth": depth / opacity.clamp_min(1e-6), "opacity": opacity}


def loss_fn(out: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """A loss touching color, depth and opacity (all three paths of a region's record)."""
    return ((out["rgb"] - target) ** 2).mean() + 1e-2 * out["depth"].mean() + 0.1 * out["opacity"].mean()


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    from teacher.xl.distributed import RegionWorker

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        shared = torch.load(Path(folder) / "setup.pt", weights_only=True)
        region = build_region(tiny_model_config(), shared["boxes"][rank], AABB, NEAR, FAR)
        prefix = f"regions.{rank}."
        state = shared["state"]
        region.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        region.double()
        worker = RegionWorker(region, rank, shared["boxes"].double(), NEAR, FAR)
        rays_o, rays_d, target, bg = (shared[k] for k in ("rays_o", "rays_d", "target", "background"))
        with torch.no_grad():
            region.eval()
            rendered = worker.render_rays(rays_o, rays_d, bg, chunk=40)  # several chunks
        region.train()
        out = worker.render_chunk(rays_o, rays_d, bg.expand_as(rays_o))
        loss = loss_fn(out, target)
        loss.backward()
        grads = {name: p.grad for name, p in region.named_parameters()}
        torch.save({"rendered": rendered, "loss": loss.detach(), "grads": grads},
                   Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize("k", [2, 4])
def test_distributed_render_and_gradients_equal_single_process(k: int, tmp_path: Path) -> None:
    teacher = make_teacher(k).double()
    rays_o, rays_d, target = (t.double() for t in make_rays(N_RAYS, 7))
    background = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    torch.save({"boxes": teacher.boxes.double(), "state": teacher.state_dict(), "rays_o": rays_o,
                "rays_d": rays_d, "target": target, "background": background}, tmp_path / "setup.pt")
    mp.spawn(_worker, args=(k, free_port(), str(tmp_path)), nprocs=k, join=True)

    teacher.eval()
    with torch.no_grad():
        ref = union_render(teacher, rays_o, rays_d, background)
        local = teacher.render_rays(rays_o, rays_d, background, chunk=40)
    assert 0.05 < float(ref["opacity"].mean()) < 0.95  # a scene that is neither empty nor opaque
    teacher.train()
    ref_loss = loss_fn(union_render(teacher, rays_o, rays_d, background), target)
    ref_loss.backward()
    for rank in range(k):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for key in ("rgb", "depth", "opacity"):
            torch.testing.assert_close(got["rendered"][key], ref[key], rtol=1e-5, atol=1e-9)
            torch.testing.assert_close(local[key], ref[key], rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(got["loss"], ref_loss.detach(), rtol=1e-9, atol=0)
        for name, p in teacher.regions[rank].named_parameters():
            grad = got["grads"][name]
            assert grad is not None and p.grad is not None and p.grad.abs().max() > 0, name
            torch.testing.assert_close(grad, p.grad, rtol=1e-5, atol=1e-7 * float(p.grad.abs().max()))


def test_content_box_is_the_union_of_the_regions_occupied_cells() -> None:
    teacher = make_teacher(3)
    with torch.no_grad():
        for k, region in enumerate(teacher.regions):
            region.occupancy.binary.zero_()
            if k < 2:  # region 2 stays empty: it must not widen the box
                gen = torch.Generator().manual_seed(k)
                cells = torch.randint(0, region.occupancy.binary.numel(), (5,), generator=gen)
                region.occupancy.binary[cells] = True
    lo, hi = [], []
    for region in list(teacher.regions)[:2]:
        occ, box = region.occupancy, region.occupancy.aabb
        R = occ.cfg.resolution
        ijk = torch.stack(torch.unravel_index(occ.binary.nonzero()[:, 0], (R, R, R)), -1).float()
        cell = (box[3:] - box[:3]) / R
        lo.append(box[:3] + ijk.amin(0) * cell)
        hi.append(box[:3] + (ijk.amax(0) + 1) * cell)
    expected = torch.cat([torch.stack(lo).amin(0), torch.stack(hi).amax(0)])
    assert torch.allclose(teacher.content_aabb(), expected, atol=1e-6)
    assert not torch.allclose(expected, teacher.aabb)
    for region in teacher.regions:
        region.occupancy.binary.zero_()
    assert torch.equal(teacher.content_aabb(), teacher.aabb)  # nothing occupied: the whole box
