"""What the device student's per-pixel geometry costs and is worth (issue 24): a surface student on a
baked copy of the teacher's density.

The image student draws its pixels from a ray map at ``1/s`` of the output, and falls far below its teacher
(``docs/device_student.md``). This study asks what one output pixel needs instead. Its student is a
*surface light field*: each pixel reads a tri-plane (:class:`student.planes.PlaneEncoding`) once, at the
point where its ray meets the surface, and a small MLP turns the features and the view direction into a
color, composited over the background with the pixel's opacity. The color model is trained on the
pseudo-views' pixels with the teacher's own depth and opacity (``data_gen depth=true alpha=true``); the
rows then give it the depth and opacity of each pixel from different sources, on the test views:

* ``teacher geometry``: the teacher's depth and opacity (the bound of the design);
* ``baked march RxN``: the teacher's density baked into an ``R^3`` grid (cell centres, zero outside its
  occupied cells) and marched with ``N`` samples per pixel, trilinear or nearest lookups (what an ONNX
  graph can do with 4-D ``GridSample`` on a 2-D atlas of the grid: two bilinear lookups a sample, or one
  nearest lookup);
* ``coarse depth, teacher opacity``: the baked march at ``1/s`` of the pixels, its depth repeated over each
  ``s x s`` block (how far depth may be off).

The time columns multiply each row's lookups per pixel by the ``GridSample`` cost this run measures in
ONNX Runtime's CPU provider (2 threads, one 1-channel grid: what a baked density needs), for a 100x100
and a 400x400 frame: lookups alone, before any other op. The teacher's depth and opacity have no graph.

    python -m benchmarks.surface_study [--run-dir runs/mic] [--seconds 60] [--views 20] [--no-write]

Prints one table and writes the ``surface_study`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import Tensor, nn

from benchmarks.results import markdown_table, write_section
from core.errors import CheckpointError, UserError, exit_on_user_error
from core.metrics import psnr
from core.rays import generate_rays, ray_aabb_intersect
from core.rendering import accumulate_along_rays, render_weights_from_density
from core.shards import read_meta
from scenes.load import SceneConfig, load_scene
from student.image_data import Views, pseudo_views
from student.planes import PlaneEncoding
from student.ray_map import block_centers, block_rays, normalize_points
from teacher.checkpoint import load_teacher
from teacher.field import SH_DIM, sh_encode
from teacher.model import Teacher

THREADS = 2
CHUNK = 4096  # rays per march chunk: [CHUNK, N, 3] points stay well under the page-faulting size


def bake_density(density: Callable[[Tensor], Tensor], box: Tensor, res: int) -> Tensor:
    """``[1, 1, R, R, R]`` densities at the cell centres of an ``R^3`` grid over ``box`` (``[6]``), laid out
    ``(z, y, x)`` as 5-D ``grid_sample`` reads it; ``density`` maps world points ``[S, 3]`` to ``[S]``."""
    c = (torch.arange(res, dtype=torch.float32) + 0.5) / res
    zz, yy, xx = torch.meshgrid(c, c, c, indexing="ij")
    u = torch.stack((xx, yy, zz), dim=-1).reshape(-1, 3)
    out = torch.empty(u.shape[0])
    with torch.no_grad():
        for i in range(0, u.shape[0], 65536):
            out[i:i + 65536] = density(box[:3] + u[i:i + 65536] * (box[3:] - box[:3]))
    return out.reshape(1, 1, res, res, res)


def march_grid(grid: Tensor, box: Tensor, rays_o: Tensor, rays_d: Tensor, n: int,
               mode: str = "bilinear") -> tuple[Tensor, Tensor]:
    """Volume rendering of a density grid: expected depth and opacity of each ray.

    Args:
        grid: ``[1, 1, R, R, R]`` densities (:func:`bake_density`), zero outside ``box``.
        box: ``[6]`` the grid's box.
        rays_o: ``[N, 3]`` origins; ``rays_d``: ``[N, 3]`` unit directions.
        n: samples per ray, at the bin centres of the ray's segment inside the box.
        mode: ``bilinear`` (trilinear in 3-D) or ``nearest`` lookups.

    Returns:
        ``depth [N]`` (distance along the ray; weighted mean over the samples, 0 where nothing is hit) and
        ``opacity [N]``.
    """
    depths, opacities = [], []
    frac = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    for i in range(0, rays_o.shape[0], CHUNK):
        o, d = rays_o[i:i + CHUNK], rays_d[i:i + CHUNK]
        t_near, t_far, _ = ray_aabb_intersect(o, d, box)  # [M]
        step = ((t_far - t_near) / n)[:, None]  # [M, 1]
        t = t_near[:, None] + (t_far - t_near)[:, None] * frac  # [M, n] bin centres
        pts = normalize_points(o[:, None] + d[:, None] * t[..., None], box)
        sigma = F.grid_sample(grid, pts.reshape(1, 1, 1, -1, 3), mode=mode, padding_mode="zeros",
                              align_corners=False).reshape(-1)
        rays = torch.arange(o.shape[0]).repeat_interleave(n)  # packed samples, ray by ray
        w, _, _ = render_weights_from_density((t - step / 2).reshape(-1), (t + step / 2).reshape(-1), sigma,
                                              rays, o.shape[0])
        opacity = accumulate_along_rays(w, None, rays, o.shape[0])[:, 0]
        depths.append(accumulate_along_rays(w, t.reshape(-1, 1), rays, o.shape[0])[:, 0]
                      / opacity.clamp_min(1e-6))
        opacities.append(opacity)
    return torch.cat(depths), torch.cat(opacities)


class SurfaceColor(nn.Module):
    """A pixel's color from one tri-plane lookup where its ray meets the surface, and its view direction."""

    def __init__(self, box: Tensor, background: Tensor, channels: int = 8, resolution: int = 256,
                 width: int = 64):
        super().__init__()
        self.box: Tensor
        self.background: Tensor
        self.register_buffer("box", box.clone())
        self.register_buffer("background", background.clone())
        self.planes = PlaneEncoding(channels, [resolution])
        self.mlp = nn.Sequential(nn.Linear(self.planes.out_dim + SH_DIM, width), nn.ReLU(),
                                 nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 3))

    def forward(self, rays_o: Tensor, rays_d: Tensor, depth: Tensor, opacity: Tensor) -> Tensor:
        """Colors ``[N, 3]`` of rays ``[N, 3]`` (origins, unit directions) at ``depth``, ``opacity``."""
        pts = normalize_points(rays_o + rays_d * depth[:, None], self.box)
        feats = self.planes(pts.reshape(1, 1, -1, 3))[0, :, 0].T  # [N, C]
        rgb = torch.sigmoid(self.mlp(torch.cat((feats, sh_encode(rays_d)), dim=-1)))
        return rgb * opacity[:, None] + (1 - opacity[:, None]) * self.background


@dataclass
class Pixels:
    """Every pixel of a set of views: rays, colors and the teacher's depth and opacity."""

    rays_o: Tensor  # [V, 3]
    rays_d: Tensor  # [V, P, 3]
    rgb: Tensor  # [V, P, 3] uint8 or float
    depth: Tensor  # [V, P]
    alpha: Tensor  # [V, P] in [0, 1]


def pseudo_pixels(views: Views) -> Pixels:
    """The pseudo-views' pixels (they must hold the teacher's depth and opacity)."""
    if views.depth is None or views.alpha is None:
        raise UserError("the pseudo-data has no depth and alpha: render it with "
                        "python -m data_gen.render depth=true alpha=true")
    rays = [generate_rays(views.c2w[v], views.K[v], *views.hw) for v in range(views.n_views)]
    return Pixels(torch.stack([o[0] for o, _ in rays]), torch.stack([d for _, d in rays]),
                  views.rgb.reshape(views.n_views, -1, 3), views.depth.reshape(views.n_views, -1).float(),
                  views.alpha.reshape(views.n_views, -1).float() / 255)


def train_color(model: SurfaceColor, px: Pixels, seconds: float, batch: int = 8192, seed: int = 0) -> int:
    """Fit ``model`` to random pixels of ``px`` with the teacher's geometry for ``seconds``; returns steps."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([{"params": model.planes.parameters(), "lr": 2e-2},
                            {"params": model.mlp.parameters(), "lr": 3e-3}], eps=1e-15)
    V, P = px.depth.shape
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        v = torch.randint(V, (batch,), generator=gen)
        i = torch.randint(P, (batch,), generator=gen)
        target = px.rgb[v, i].float()
        target = target / 255 if px.rgb.dtype == torch.uint8 else target
        loss = F.mse_loss(model(px.rays_o[v], px.rays_d[v, i], px.depth[v, i], px.alpha[v, i]), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    return steps


def gridsample_ns(points: int, mode: str, channels: int = 1, size: int = 256, repeats: int = 5) -> float:
    """ONNX Runtime CPU (``THREADS`` threads) nanoseconds per point of one 4-D ``GridSample`` of a
    ``[1, channels, size, size]`` texture at ``points`` random points (``zeros``, ``align_corners=0``)."""
    node = helper.make_node("GridSample", ["x", "g"], ["y"], mode=mode, padding_mode="zeros", align_corners=0)
    graph = helper.make_graph(
        [node], "lookup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size]),
         helper.make_tensor_value_info("g", TensorProto.FLOAT, [1, points, 1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, points, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"x": rng.random((1, channels, size, size), dtype=np.float32),
            "g": rng.random((1, points, 1, 2), dtype=np.float32) * 2 - 1}
    sess.run(None, feed)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feed)
        best = min(best, time.perf_counter() - t0)
    return best * 1e9 / points


def _sizes(text: str) -> list[int]:
    """``"128,192"`` -> ``[128, 192]`` (positive integers), for argparse."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--run-dir", default="runs/mic", help="a run with teacher/ and pseudo/ (depth, alpha)")
    p.add_argument("--scene", default=None, help="scene folder (default: the one the pseudo-data names)")
    p.add_argument("--seconds", type=float, default=60.0, help="training time of the color model")
    p.add_argument("--views", type=int, default=20, help="test views evaluated")
    p.add_argument("--grids", type=_sizes, default=[128, 192], help="baked grid resolutions")
    p.add_argument("--samples", type=_sizes, default=[64, 128], help="march samples per pixel")
    p.add_argument("--coarse", type=int, default=2, help="block size of the coarse-depth row")
    p.add_argument("--lookup-points", type=int, default=1 << 20, help="points of the GridSample timing")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p.parse_args(argv)


@exit_on_user_error  # a bad run folder, scene or checkpoint: one line, exit 1
def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    run = Path(args.run_dir)
    ckpt = run / "teacher" / "teacher.ckpt"
    if not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: no teacher checkpoint: train one with python -m teacher.train")
    teacher = load_teacher(ckpt)
    if not isinstance(teacher, Teacher) or teacher.ndc is not None:
        raise CheckpointError(f"{ckpt}: the study takes a single-box object teacher")
    field, occupancy = teacher.field, teacher.occupancy
    meta = read_meta(run / "pseudo")
    px = pseudo_pixels(pseudo_views(meta))
    box = teacher.content_aabb().float().cpu()
    background = torch.tensor(meta.scene.background, dtype=torch.float32)
    if not (args.scene or meta.scene_path):
        raise UserError(f"{run / 'pseudo' / 'meta.json'}: names no scene folder: give --scene")
    scene = load_scene(SceneConfig(path=args.scene or meta.scene_path))
    test = scene.split("test")
    n_views = min(args.views, test.c2w.shape[0])
    photos_hw = test.rgb(background.tolist())[:n_views]
    hw = (int(photos_hw.shape[1]), int(photos_hw.shape[2]))
    photos = photos_hw.reshape(n_views, -1, 3)

    model = SurfaceColor(box, background)
    steps = train_color(model, px, args.seconds)
    model.eval()

    def density(x: Tensor) -> Tensor:
        return field.query_density(x)[0] * occupancy.occupied(x)

    cams = [(test.c2w[v], test.K[v], *generate_rays(test.c2w[v], test.K[v], *hw)) for v in range(n_views)]
    with torch.no_grad():
        renders = [teacher.render_rays(o, d, background) for _, _, o, d in cams]
    rows: list[dict] = []

    def evaluate(name: str, geometry: Callable[[int], tuple[Tensor, Tensor]], lookups: float | None,
                 kind: str | None) -> None:
        with torch.no_grad():
            scores = []
            for v, (_, _, o, d) in enumerate(cams):
                depth, opacity = geometry(v)
                scores.append(psnr(model(o, d, depth, opacity).clamp(0, 1), photos[v]))
        rows.append({"geometry": name, "psnr": sum(scores) / len(scores), "lookups": lookups, "kind": kind})

    teacher_psnr = sum(psnr(r["rgb"].clamp(0, 1), photos[v]) for v, r in enumerate(renders)) / n_views
    evaluate("teacher geometry", lambda v: (renders[v]["depth"], renders[v]["opacity"]), None, None)
    grids = {}
    for res in args.grids:
        grids[res] = bake_density(density, box, res)
        for n in args.samples:
            for mode in ("bilinear", "nearest"):
                def marched(v: int, g: Tensor = grids[res], n: int = n, m: str = mode
                            ) -> tuple[Tensor, Tensor]:
                    return march_grid(g, box, cams[v][2], cams[v][3], n, m)

                evaluate(f"baked march {res}^3 x {n}, {'trilinear' if mode == 'bilinear' else 'nearest'}",
                         marched, 2.0 * n if mode == "bilinear" else float(n), mode)
    res, n, s = max(grids), max(args.samples), args.coarse

    def coarse(v: int) -> tuple[Tensor, Tensor]:
        c2w, K, _, _ = cams[v]
        h, w = -(-hw[0] // s), -(-hw[1] // s)
        o, d = block_rays(c2w[None], K[None], block_centers(h, w, s))
        depth, _ = march_grid(grids[res], box, o.reshape(1, 3).expand(h * w, 3), d.reshape(-1, 3), n)
        block = depth.reshape(h, w).repeat_interleave(s, 0).repeat_interleave(s, 1)[:hw[0], :hw[1]]
        return block.reshape(-1), renders[v]["opacity"]

    evaluate(f"coarse depth (baked {res}^3 x {n} at 1/{s}), teacher opacity", coarse, 2.0 * n / s ** 2,
             "bilinear")
    ns = {"bilinear": gridsample_ns(args.lookup_points, "bilinear"),
          "nearest": gridsample_ns(args.lookup_points, "nearest")}
    ns8 = gridsample_ns(max(args.lookup_points // 8, 1), "bilinear", channels=8)
    table: list[list[object]] = [["teacher (its own render)", f"{teacher_psnr:.2f}", "-", "-", "-", "-"]]
    for r in rows:
        ms = [r["lookups"] * px_count * ns[r["kind"]] * 1e-6 if r["lookups"] else None
              for px_count in (100 * 100, 400 * 400)]
        table.append([r["geometry"], f"{r['psnr']:.2f}", f"{r['psnr'] - teacher_psnr:+.2f}",
                      f"{r['lookups']:g}" if r["lookups"] else "-",
                      *(f"{m:.1f}" if m is not None else "-" for m in ms)])
    headers = ["pixel geometry", "test PSNR (dB)", "vs teacher", "GridSample lookups a pixel",
               "lookups alone, 100x100 (ms)", "400x400 (ms)"]
    body = (
        f"{n_views} test views of `{scene.root}`; the surface color model (tri-plane 256 px x 8 channels "
        f"at the surface, MLP 64 x 2) trained {args.seconds:g} s ({steps} steps of 8192 pseudo-view pixels) "
        f"with the teacher's depth and opacity.\n\n"
        + markdown_table(headers, table)
        + f"\n\nONNX Runtime {ort.__version__} CPU, {THREADS} threads, 4-D GridSample of a 1-channel "
        f"256x256 texture: {ns['bilinear']:.1f} ns a point bilinear, {ns['nearest']:.1f} ns nearest; "
        f"8 channels bilinear: {ns8:.1f} ns a point ({ns8 / 8:.1f} ns a channel). A trilinear lookup in a "
        f"2-D atlas of the grid is two bilinear lookups.\n"
    )
    print(body)
    if not args.no_write:
        given = list(sys.argv[1:] if argv is None else argv)
        write_section("surface_study", body, " ".join(["python -m benchmarks.surface_study", *given]))
    return {"rows": rows, "teacher_psnr": teacher_psnr, "ns": ns, "ns8": ns8, "steps": steps}


if __name__ == "__main__":
    main(sys.argv[1:])
