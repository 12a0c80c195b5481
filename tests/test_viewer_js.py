"""The web viewer's JavaScript and WebAssembly in node, against the Python they mirror: camera and ray math
(core.rays, core.ndc, export.runtime), the orbit of the rig, the hash-grid encoder of the split student and
its SIMD kernel (cuda/hashgrid_ref.py, bit for bit). The page itself, in Chromium: tests/test_viewer.py.

These tests need node (installed with npm): they fail, never skip, without it.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from core.ndc import NDCSpace
from core.rays import generate_rays
from export.runtime import rays_meet_box
from export.viewer.page import WEB_DIR
from testing.cli import run_js

NODE = shutil.which("node")


def _random_pose(gen: np.random.Generator, center: np.ndarray, radius: float) -> np.ndarray:
    """A camera on a sphere around ``center`` looking near it (OpenCV c2w)."""
    from core.cameras import look_at

    offset = gen.normal(size=3)
    eye = torch.tensor(center + radius * offset / np.linalg.norm(offset), dtype=torch.float32)
    target = torch.tensor(center + 0.05 * radius * gen.normal(size=3), dtype=torch.float32)
    return look_at(eye[None], target, torch.tensor([0.0, 0.0, 1.0]))[0].numpy()


def test_js_rays_match_core_rays_on_random_cameras() -> None:
    gen = np.random.default_rng(0)
    cases = []
    for _ in range(5):
        H, W = int(gen.integers(3, 17)), int(gen.integers(3, 17))
        f = float(gen.uniform(5, 40))
        K = np.array([[f, 0, W / 2 + gen.uniform(-2, 2)],
                      [0, f * gen.uniform(0.8, 1.2), H / 2 + gen.uniform(-2, 2)],
                      [0, 0, 1]])
        c2w = _random_pose(gen, gen.normal(size=3), float(gen.uniform(1, 5)))
        cases.append({"c2w": c2w.reshape(-1).tolist(), "K": K.reshape(-1).tolist(), "H": H, "W": W})
    got = run_js("import {raysFromCamera} from './camera.js';"
                  f"const cases = {json.dumps(cases)};"
                  "console.log(JSON.stringify(cases.map(c => {"
                  " const r = raysFromCamera(c.c2w, c.K, c.H, c.W);"
                  " return {o: Array.from(r.o), d: Array.from(r.d)} })))")
    for case, res in zip(cases, got, strict=True):
        o, d = generate_rays(torch.tensor(case["c2w"]).view(4, 4), torch.tensor(case["K"]).view(3, 3),
                             case["H"], case["W"])
        np.testing.assert_allclose(np.array(res["o"]).reshape(-1, 3), o.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.array(res["d"]).reshape(-1, 3), d.numpy(), rtol=1e-5, atol=1e-6)
        assert np.abs(np.array(res["d"])).max() > 0.1  # not a degenerate case


def test_js_box_test_matches_runtime() -> None:
    gen = np.random.default_rng(1)
    o = gen.normal(size=(500, 3)).astype(np.float32) * 3
    d = (-o + 1.5 * gen.normal(size=(500, 3))).astype(np.float32)  # towards the box, give or take
    d[:40, 0] = 0.0  # rays parallel to a slab
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    box = [-1.0, -0.5, -0.8, 1.2, 0.7, 0.9]
    got = run_js("import {raysMeetBox} from './camera.js';"
                  f"const o = new Float32Array({o.reshape(-1).tolist()});"
                  f"const d = new Float32Array({d.reshape(-1).tolist()});"
                  f"console.log(JSON.stringify(Array.from(raysMeetBox(o, d, {box}, 0.5, 6.0))))")
    want = rays_meet_box(o, d, box, 0.5, 6.0)
    assert 50 < want.sum() < 450  # both outcomes occur
    np.testing.assert_array_equal(np.array(got, dtype=bool), want)


def test_js_query_interface_parses_and_rejects() -> None:
    pose = ",".join(str(float(x)) for x in np.eye(4).reshape(-1))
    got = run_js("import {parseQuery} from './camera.js';"
                  f"console.log(JSON.stringify([parseQuery('?pose={pose}&size=64x48&model=student_int8.onnx&threads=2&frames=5'),"
                  " parseQuery('?pose=1,2,3'), parseQuery('?size=0x5'), parseQuery('?model=../x.onnx'),"
                  " parseQuery('?frames=0'), parseQuery('?cells=0'), parseQuery('?cells=no')]))")
    ok = got[0]
    assert ok["error"] is None and ok["size"] == [64, 48] and ok["model"] == "student_int8.onnx"
    assert ok["threads"] == 2 and ok["frames"] == 5 and ok["pose"] == np.eye(4).reshape(-1).tolist()
    assert "pose=" in got[1]["error"] and "size=" in got[2]["error"] and "model=" in got[3]["error"]
    assert "frames=" in got[4]["error"]
    assert ok["cells"] is True and got[5]["cells"] is False and "cells=" in got[6]["error"]


def test_js_orbit_matches_export_paths() -> None:
    from export.runtime.paths import orbit_poses

    rig = {"center": [0.1, -0.2, 0.3], "up": [0.1, 0.2, 0.97], "radius": 3.5, "elevation": 0.4}
    got = run_js("import {orbitBasis, orbitPose} from './camera.js';"
                  f"const rig = {json.dumps(rig)}; const b = orbitBasis(rig);"
                  "console.log(JSON.stringify([0, 1, 2, 3].map(i =>"
                  " orbitPose(b, rig.center, i / 4 * 2 * Math.PI,"
                  " rig.elevation, rig.radius))))")
    want = orbit_poses(rig, 4)
    np.testing.assert_allclose(np.array(got).reshape(4, 4, 4), want, atol=2e-6)


def _forward_rays(gen: np.random.Generator, ref: np.ndarray, n: int, fov: float = 1.0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``[n, 3]`` world rays of cameras near the reference pose ``ref`` looking its way (a forward rig's)."""
    R, t = ref[:3, :3], ref[:3, 3]
    o = t + (gen.uniform(-0.3, 0.3, (n, 3)) * [1.0, 1.0, 0.2]) @ R.T
    d = np.concatenate([gen.uniform(-fov, fov, (n, 2)), np.ones((n, 1))], 1) @ R.T
    return o, d / np.linalg.norm(d, axis=1, keepdims=True)


def test_js_ndc_rays_match_core_ndc_on_random_cameras() -> None:
    from core.ndc import ndc_rays

    gen = np.random.default_rng(2)
    cases = []
    for _ in range(4):
        ref = _random_pose(gen, gen.normal(size=3), float(gen.uniform(1, 4))).astype(np.float64)
        o, d = _forward_rays(gen, ref, 40)
        # rays the conversion bends: nearly parallel to the reference image plane (either side), looking back
        odd = np.array([[1.0, 0.3, 5e-5], [0.2, -1.0, -5e-5], [0.1, 0.2, -1.0]]) @ ref[:3, :3].T
        odd /= np.linalg.norm(odd, axis=1, keepdims=True)
        o, d = np.concatenate([o, o[:3]]), np.concatenate([d, odd])
        ndc = {"c2w": ref.tolist(), "scale": gen.uniform(0.8, 3.0, 2).tolist(),
               "near": float(gen.uniform(0.2, 2))}
        cases.append({"o": o.reshape(-1).tolist(), "d": d.reshape(-1).tolist(), "ndc": ndc})
    got = run_js("import {ndcRays} from './camera.js';"
                  f"const cases = {json.dumps(cases)};"
                  "console.log(JSON.stringify(cases.map(c => {"
                  " const r = ndcRays(c.o, c.d, c.ndc); return {o: Array.from(r.o), d: Array.from(r.d)} })))")
    for case, res in zip(cases, got, strict=True):
        ndc = case["ndc"]
        want_o, want_d = ndc_rays(torch.tensor(case["o"], dtype=torch.float64).view(-1, 3),
                                  torch.tensor(case["d"], dtype=torch.float64).view(-1, 3),
                                  torch.tensor(ndc["c2w"], dtype=torch.float64),
                                  torch.tensor(ndc["scale"], dtype=torch.float64), ndc["near"])
        np.testing.assert_allclose(np.array(res["o"]).reshape(-1, 3), want_o.numpy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(np.array(res["d"]).reshape(-1, 3), want_d.numpy(), rtol=1e-9, atol=1e-9)
        assert np.allclose(want_o[:40, 2].numpy(), -1.0)  # forward rays start on the near plane (z' = -1)
        assert np.abs(want_d.numpy()).max() > 1e3  # the bent sideways rays are in the case


def _forward_rig() -> dict:
    from core.ndc import average_pose
    from core.rig import camera_rig
    from testing.scenes.rigs import forward_poses, world_from_rig

    c2w = (world_from_rig(3) @ forward_poses(3)).float()
    return camera_rig(c2w, NDCSpace(c2w=average_pose(c2w).tolist(), scale=[1.0, 1.0], near=1.5))


def check_near_the_rig(c2w: np.ndarray, rig: dict) -> None:
    """A pose the viewer allows on a forward rig: near the average pose, looking its way."""
    avg = np.array(rig["c2w"])
    reach = 1.5 * rig["path_radius"]  # camera.js FORWARD_REACH
    angle = math.acos(min(float(c2w[:3, 2] @ avg[:3, 2]), 1.0))
    assert angle <= 1.5 * math.atan(reach / rig["focus_depth"]) < math.radians(10)
    offset = c2w[:3, 3] - avg[:3, 3]
    assert np.linalg.norm(offset) < 4 * reach and offset @ avg[:3, 2] > -2 * reach  # not behind the rig
    assert c2w[:3, 1] @ avg[:3, 1] > 0.98  # image down stays down


def test_js_forward_view_starts_on_the_average_pose_and_stays_near_it() -> None:
    from core.rig import camera_rig
    from testing.scenes.rigs import ring_poses

    rig = _forward_rig()
    obj = camera_rig(ring_poses(8))
    got = run_js("import {clampView, orbitPose, rigView} from './camera.js';"
                  f"const rigs = {json.dumps([rig, obj])};"
                  "console.log(JSON.stringify(rigs.map(rig => { const r = rigView(rig);"
                  " const pose = v => orbitPose(r.basis, v.target, v.az, v.el, v.radius);"
                  " const wild = {target: rig.center.map(x => x + 10), az: 3, el: -2, radius: 100};"
                  " const near = clampView(wild, r.limits, rig.center);"
                  " return {view: r.view, start: pose(r.view), far: pose(near), wild: near} })))")
    np.testing.assert_allclose(np.array(got[0]["start"]).reshape(4, 4), np.array(rig["c2w"]), atol=1e-6)
    check_near_the_rig(np.array(got[0]["far"]).reshape(4, 4), rig)
    # an object rig: the orbit of before (azimuth 0 at the rig's elevation), unlimited but for the poles
    start = {"target": obj["center"], "az": 0, "el": obj["elevation"], "radius": obj["radius"]}
    assert got[1]["view"] == start
    assert got[1]["wild"]["az"] == 3 and got[1]["wild"]["el"] == -1.5 and got[1]["wild"]["radius"] == 100


# --- the split student (JS encoding + ONNX MLP) ---------------------------------------------------


def _hash_student(point_freqs: int, ndc: NDCSpace | None = None, occupancy: torch.Tensor | None = None
                  ) -> torch.nn.Module:
    """A tiny hash-grid student with a random table: of an object scene (with an empty-space grid if
    given), or in ``ndc`` (NDC box)."""
    from student.encoding import GridConfig
    from student.model import R2LStudent, StudentModelConfig

    grid = GridConfig(n_levels=3, n_features=2, log2_hashmap_size=12, base_resolution=6, max_resolution=40,
                      point_freqs=point_freqs)  # a dense level, then hashed ones
    box, near, far = ([-0.6, -0.5, -0.4, 0.5, 0.6, 0.7], 0.5, 5.0) if ndc is None else \
        ([-1.1, -0.9, -1.0, 1.0, 1.2, 1.0], 0.0, 3.5)
    model = R2LStudent(StudentModelConfig(encoding="hash", n_points=5, width=16, depth=4, grid=grid),
                       torch.tensor(box), near, far, ndc=ndc, occupancy=occupancy).eval()
    with torch.no_grad():
        model.encoder.grid.params.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(2))
    return model


def _js_encode(model: torch.nn.Module, o: torch.Tensor, d: torch.Tensor, tmp_path: Path, wasm: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """``features [hits, in_dim]`` (of the rays hit, in order) and ``hit [N]`` of ``encoder.js`` for world
    rays ``o, d [N, 3]`` (with the student's empty-space grid, if it has one; the lookup in
    ``hashgrid.wasm`` with ``wasm``)."""
    from export.split import encoder_facts, table_bytes

    (tmp_path / "table.bin").write_bytes(table_bytes(model))
    (tmp_path / "case.json").write_text(json.dumps({"o": o.reshape(-1).tolist(), "d": d.reshape(-1).tolist(),
                                                    "enc": encoder_facts(model)}))
    kernel = "wasmKernel(fs.readFileSync('hashgrid.wasm'), table)" if wasm else "null"
    got = run_js("import {encodeRays, wasmKernel} from './encoder.js';"
                  "import {decodeCells} from './camera.js';"
                  "import fs from 'fs';"
                  f"const c = JSON.parse(fs.readFileSync('{tmp_path / 'case.json'}'));"
                  f"const b = fs.readFileSync('{tmp_path / 'table.bin'}');"
                  "const table = new Float32Array(b.buffer, b.byteOffset, b.length / 4);"
                  "const n = c.o.length / 3; const rows = Int32Array.from({length: n}, (_, i) => i);"
                  "const cells = c.enc.occupancy ? decodeCells(c.enc.occupancy) : null;"
                  "const o = new Float32Array(c.o), d = new Float32Array(c.d);"
                  f"const kernel = {kernel};"
                  "const r = encodeRays(o, d, rows, c.enc, table, cells, kernel);"
                  "console.log(JSON.stringify({f: Array.from(r.features), hit: Array.from(r.hit)}))")
    hit = np.array(got["hit"], dtype=bool)
    return np.array(got["f"], dtype=np.float32).reshape(int(hit.sum()), -1), hit


@pytest.mark.parametrize(("point_freqs", "cells", "wasm"),
                         [(-1, False, False), (2, False, False), (-1, True, False), (-1, True, True),
                          (-1, False, True), (2, False, True)])  # wasm: points in the kernel unless PE
def test_js_encoder_matches_the_student(point_freqs: int, cells: bool, wasm: bool, tmp_path: Path) -> None:
    """Same features and hits (JS or WebAssembly lookup); with an empty-space grid the rays crossing
    only empty cells are misses."""
    grid = torch.rand(7, 7, 7, generator=torch.Generator().manual_seed(8)) < 0.08 if cells else None
    model = _hash_student(point_freqs, occupancy=grid)
    assert not model.encoder.grid.spec.is_dense(2) and model.encoder.grid.spec.is_dense(0)
    gen = torch.Generator().manual_seed(4)
    o = torch.randn(300, 3, generator=gen) * 2.0
    o[:30] *= 0.1  # some rays start inside the box
    d = torch.nn.functional.normalize(-o + 0.6 * torch.randn(300, 3, generator=gen), dim=-1)
    with torch.no_grad():
        want, hit = model.encoder(o, d)
    assert 30 < int(hit.sum()) < 290
    if cells:  # the grid turns some box hits into misses
        assert int(hit.sum()) < int(model.encoder.segment(o, d)[2].sum())
    feats, got_hit = _js_encode(model, o, d, tmp_path, wasm)
    np.testing.assert_array_equal(got_hit, hit.numpy())
    assert feats.shape[1] == model.encoder.out_dim
    np.testing.assert_allclose(feats, want.numpy()[got_hit], rtol=1e-4, atol=2e-5)


def test_js_encoder_matches_a_forward_facing_student(tmp_path: Path) -> None:
    """In NDC the page converts rays as the graph does, and every ray is a hit (even off the NDC box)."""
    gen = np.random.default_rng(6)
    ref = _random_pose(gen, gen.normal(size=3), 2.0).astype(np.float64)
    model = _hash_student(2, NDCSpace(c2w=ref.tolist(), scale=[1.3, 1.7], near=0.8))
    o, d = (torch.tensor(a, dtype=torch.float32) for a in _forward_rays(gen, ref, 300, fov=0.9))
    with torch.no_grad():
        want, hit = model.encoder(o, d)
        start = model.encoder.segment(o, d)[0]
    assert bool(hit.all())
    assert 10 < int((start.abs() > 1.001).any(-1).sum()) < 290  # some rays leave the box sideways
    feats, got_hit = _js_encode(model, o, d, tmp_path)
    assert got_hit.all() and feats.shape == tuple(want.shape)
    # the student runs the NDC conversion in float32, the page in float64: points differ by ~1e-6
    np.testing.assert_allclose(feats, want.numpy(), rtol=1e-4, atol=2e-4)


def _level_reference(unit: np.ndarray, table: np.ndarray, scale: float, off: int, dense: bool, R: int,
                     size: int, mask: int, primes: list[int]) -> np.ndarray:
    """``[P, 2]`` features of one level in float32, in the operation order of hashgrid.wat's ``level``."""
    f32 = np.float32
    q = unit * f32(scale) + f32(0.5)
    g = np.floor(q)
    fr = q - g
    ix, iy, iz = (g[:, a].astype(np.int64) for a in range(3))
    corners = [(x, y, z) for z in (0, 1) for y in (0, 1) for x in (0, 1)]  # c = x + 2 y + 4 z
    if dense:
        idx = np.stack([ix + x + (iy + y) * R + (iz + z) * R * R for x, y, z in corners])
        wrap = idx[7] >= size
        idx[:, wrap] %= size
    else:
        u32 = np.uint32
        hy = [(iy + y).astype(u32) * u32(primes[1]) for y in (0, 1)]
        hz = [(iz + z).astype(u32) * u32(primes[2]) for z in (0, 1)]
        idx = np.stack([((ix + x).astype(u32) ^ (hy[y] ^ hz[z])) & u32(mask) for x, y, z in corners])
    one = f32(1)
    fx, fy, fz = fr[:, 0], fr[:, 1], fr[:, 2]
    w00, w10, w01, w11 = (one - fy) * (one - fz), fy * (one - fz), (one - fy) * fz, fy * fz
    c = [(one - fx) * w00, fx * w00, (one - fx) * w10, fx * w10, (one - fx) * w01, fx * w01,
         (one - fx) * w11, fx * w11]
    t = table.reshape(-1, 2)[off + idx.astype(np.int64)]  # [8, P, 2]
    p = [c[i][:, None] * t[i] for i in range(8)]
    return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]))


def test_wasm_level_kernel_is_bit_exact(tmp_path: Path) -> None:
    """hashgrid.wasm's SIMD lookup (four points at a time, across rays) equals the float32 arithmetic of
    the scalar lookup bit for bit: dense and hashed levels, the boundary wrap of a dense level (points
    on the cube's far corner), a last group of fewer than four points, rows wider than the features."""
    from cuda.hashgrid_ref import PRIMES

    primes = [int(p) for p in PRIMES]
    model = _hash_student(-1)
    spec = model.encoder.grid.spec
    table = model.encoder.grid.params.detach().numpy().astype(np.float32).reshape(-1)
    gen = np.random.default_rng(3)
    n, K, L = 37, 5, spec.n_levels  # 185 points: 46 groups of four and one point
    unit = gen.random((n * K, 3), dtype=np.float32)
    unit[:6] = [[1, 1, 1], [0, 0, 0], [1, 0, 1], [0, 1, 1], [1, 1, 0], [0.999, 1, 1]]
    unit[-1] = [1, 1, 1]
    in_dim = K * L * 2 + 7  # room after the features (the PE of the points goes there)
    T = 2**spec.log2_hashmap_size
    levels = [{"scale": spec.scales[lv], "off": spec.offsets[lv], "R": spec.resolutions[lv],
               "dense": int(spec.resolutions[lv] ** 3 <= T), "size": spec.sizes[lv]} for lv in range(L)]
    assert {lv["dense"] for lv in levels} == {0, 1}
    case = {"table": table.tolist(), "unit": unit.reshape(-1).tolist(), "levels": levels, "n": n, "K": K,
            "L": L, "in_dim": in_dim, "mask": T - 1, "primes": primes}
    (tmp_path / "case.json").write_text(json.dumps(case))
    got = run_js("import fs from 'fs';"
                 f"const c = JSON.parse(fs.readFileSync('{tmp_path / 'case.json'}'));"
                 "const { instance } = await WebAssembly.instantiate(fs.readFileSync('hashgrid.wasm'));"
                 "const mem = instance.exports.memory;"
                 "const unitPtr = c.table.length * 4, featPtr = unitPtr + c.unit.length * 4 + 48;"
                 "const end = featPtr + 4 * c.n * c.in_dim;"
                 "mem.grow(Math.ceil(end / 65536) - mem.buffer.byteLength / 65536);"
                 "new Float32Array(mem.buffer, 0, c.table.length).set(c.table);"
                 "new Float32Array(mem.buffer, unitPtr, c.unit.length).set(c.unit);"
                 "c.levels.forEach((v, l) => instance.exports.level(unitPtr, c.n, c.K, featPtr, 4 * c.in_dim,"
                 " 8 * c.L, 8 * l, v.scale, 8 * v.off, v.dense, v.R, v.size, c.mask, c.primes[1] | 0,"
                 " c.primes[2] | 0));"
                 "const f = new Float32Array(mem.buffer, featPtr, c.n * c.in_dim);"
                 "console.log(JSON.stringify(Array.from(f)))")
    feats = np.array(got, dtype=np.float32).reshape(n, in_dim)
    assert not feats[:, K * L * 2:].any()  # nothing written past the features of a row
    for lv, v in enumerate(levels):
        want = _level_reference(unit, table, v["scale"], v["off"], bool(v["dense"]), v["R"], v["size"], T - 1,
                                primes).reshape(n, K, 2)
        np.testing.assert_array_equal(feats[:, :K * L * 2].reshape(n, K, L, 2)[:, :, lv], want)


def test_wasm_kernel_is_built_from_its_source() -> None:
    """hashgrid.wasm is what scripts/build_wasm.mjs makes of hashgrid.wat (wabt from npm)."""
    assert NODE, "node is needed for the viewer's JS tests (it is installed with npm)"
    repo = Path(__file__).resolve().parents[1]
    assert (repo / "export" / "viewer" / "web") == WEB_DIR
    out = subprocess.run([NODE, "scripts/build_wasm.mjs", "--check"], cwd=repo, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_split_mlp_equals_the_student() -> None:
    from export.split import mlp_int8, mlp_onnx, run_mlp

    model = _hash_student(-1)
    feats = torch.randn(200, model.encoder.out_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model.forward_encoded(feats).numpy()
    proto = mlp_onnx(model)
    np.testing.assert_allclose(run_mlp(proto, feats.numpy()), want, rtol=1e-5, atol=1e-6)
    err8 = np.abs(run_mlp(mlp_int8(proto), feats.numpy()) - want)
    assert 0 < err8.max() < 0.05  # quantized, and close
