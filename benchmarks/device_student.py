"""Speed study of the device student (issue 24): standard-op ONNX graphs drawing a whole view on 2 CPU cores.

Each candidate is a torch module with the device graph's camera contract (inputs ``c2w`` [4, 4], ``K`` [3, 3]
in pixels of the output; output ``rgb`` [H, W, 3]; rays built in the graph from a constant pixel grid, OpenCV
axes, float ops only), exported with random weights to a static ONNX graph and run by ONNX Runtime's CPU
provider on 2 threads. Table (section ``device_student`` of RESULTS.md, rows also in ``--json``): ms per
frame (best of repeats), GFLOP per frame, parameters, peak activation, op types (flagging any outside the
device op set), and an ONNX fp32 MatMul 2048^3 reference row so it can be read on another CPU.

    python -m benchmarks.device_student [--repeats 5] [--only NAME] [--sizes 400,100] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper, shape_inference
from torch import Tensor, nn

from benchmarks.results import markdown_table, write_section

log = logging.getLogger(__name__)
Row = dict[str, Any]
DEFAULT_JSON = Path(__file__).resolve().parent / "device_student.json"
BOX = 1.5  # content box [-1.5, 1.5]^3
NEAR, FAR = 2.0, 6.0  # fixed z-depths of the points along each ray (the cameras are 4 from the origin)
OCTAVES = 6  # positional encoding: sin/cos of 2^0..2^5 pi x
TIME_BUDGET_S = 3.0  # per row: fewer repeats when one frame is slow
ALLOWED = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Gelu",
           "Erf", "Tanh", "Sin", "Cos", "Sqrt", "Neg", "GridSample", "DepthToSpace", "Resize", "Reshape",
           "Transpose", "Concat", "Slice", "Squeeze", "Unsqueeze", "Constant", "Identity",
           "QuantizeLinear", "DequantizeLinear"}  # the last two: int8 rows only
ARITH = {"Add", "Sub", "Mul", "Div"}
NOTES = (
    "ms: best of the repeats after a warm-up, one frame per call, rounds interleaved over the rows of a "
    "size; ORT CPU provider, 2 intra-op threads, spinning off (idle sessions' spinning pools took the 2 "
    f"cores), optimisation ALL; a row whose warm-up takes over {TIME_BUDGET_S:.0f} s / repeats gets fewer "
    "repeats. GFLOP: 2 x the MACs of Conv, ConvTranspose, MatMul, Gemm + 2 per corner and channel of each "
    "GridSample output, from the exported graph's shapes; element-wise ops are not counted. Peak activation: "
    "the largest single intermediate tensor of the graph, not the sum of the live ones. planes-1/s: ray map "
    "at 1/s of the output, 8 points per ray at fixed depths, summed xy/xz/yz plane features (256^2 x 16 ch, "
    "one 4-D GridSample per plane, bilinear, zeros, align_corners=False) stacked over the points to 128 "
    "channels, a "
    "1x1-conv body (96 wide, stem + 3 residual layers), 3x3 conv + DepthToSpace(2) tail stages (-last1x1: "
    "last stage 1x1; -convT: ConvTranspose k4 s2 stages); planes-ms: 64/128/256 x 8 ch; per-pixel-planes: "
    "64->64->64->3 1x1 convs on 4 points per pixel; mobile-r2l-slim: 312-ch positional encoding, 7 1x1 convs "
    "128 wide; hash-dense-baseline: 32 points per ray in a 64^3 x 8 grid (5-D GridSample: opset 20 only) and "
    "a 4 x 64 per-pixel MLP. Sizes not divisible by the ray-map factor are drawn a tile larger and cropped."
)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One candidate architecture."""

    name: str
    scale: int  # ray map at 1/scale of the output resolution
    points: int  # points per ray
    encoder: str  # "planes", "pe" or "dense"
    levels: tuple[tuple[int, int], ...] = ((256, 16),)  # (resolution, channels) per plane level / dense grid
    width: int = 96
    layers: int = 3  # 1x1 layers after the stem
    residual: bool = True
    tail: str = "d2s"  # "d2s", "d2s-last1x1", "convT" or "head" (1x1 conv to RGB, no upsampling)
    repeats: int = 0  # forced number of repeats (slow rows); 0: --repeats


CANDIDATES = [
    Spec("planes-1/4", 4, 8, "planes"),
    Spec("planes-1/8", 8, 8, "planes"),
    Spec("planes-1/4-last1x1", 4, 8, "planes", tail="d2s-last1x1"),
    Spec("planes-1/8-last1x1", 8, 8, "planes", tail="d2s-last1x1"),
    Spec("planes-1/4-convT", 4, 8, "planes", tail="convT"),
    Spec("planes-1/8-convT", 8, 8, "planes", tail="convT"),
    Spec("planes-ms-1/4", 4, 8, "planes", levels=((64, 8), (128, 8), (256, 8))),
    Spec("per-pixel-planes", 1, 4, "planes", width=64, layers=1, residual=False, tail="head"),
    Spec("mobile-r2l-slim-1/4", 4, 8, "pe", width=128, layers=6),
    Spec("mobile-r2l-slim-1/8", 8, 8, "pe", width=128, layers=6),
    Spec("hash-dense-baseline", 1, 32, "dense", ((64, 8),), width=64, residual=False, tail="head", repeats=1),
]


class RayPoints(nn.Module):
    """Points along the rays of a ray map at 1/``scale`` of a ``size`` x ``size`` view, in box units."""

    def __init__(self, size: int, scale: int, points: int) -> None:
        super().__init__()
        self.hr = math.ceil(size / scale)
        centres = (torch.arange(self.hr, dtype=torch.float32) + 0.5) * scale  # in output pixels
        v, u = torch.meshgrid(centres, centres, indexing="ij")  # constants of the graph, not parameters
        self.u, self.v = u.reshape(-1, 1), v.reshape(-1, 1)
        self.depth = torch.linspace(NEAR, FAR, points).reshape(points, 1, 1, 1)

    def forward(self, c2w: Tensor, K: Tensor) -> Tensor:
        """``c2w`` [4, 4], ``K`` [3, 3] -> points [P, Hr, Wr, 3] scaled so the box is [-1, 1]^3."""
        y = (self.v - K[1:2, 2:3]) / K[1:2, 1:2]  # [Hr*Wr, 1]; slices, not Gather
        x = (self.u - K[0:1, 2:3] - K[0:1, 1:2] * y) / K[0:1, 0:1]
        axes = c2w[0:3, 0:3].transpose(0, 1)  # rows: the camera axes in world coordinates
        d = x * axes[0:1] + y * axes[1:2] + axes[2:3]  # [Hr*Wr, 3] = R K^-1 [u, v, 1]
        o = c2w[0:3, 3:4].reshape(1, 1, 1, 3)
        return (o + self.depth * d.reshape(1, self.hr, self.hr, 3)) * (1.0 / BOX)


class Features(nn.Module):
    """Point features stacked into channels, [P, Hr, Wr, 3] -> [1, P*C, Hr, Wr]: summed xy/xz/yz planes (4-D
    GridSample, bilinear) with the levels concatenated, or a dense grid (5-D GridSample, trilinear)."""

    def __init__(self, levels: tuple[tuple[int, int], ...], dense: bool) -> None:
        super().__init__()
        self.dense, shapes = dense, [(1, c, r, r, r) if dense else (3, c, r, r) for r, c in levels]
        self.grids = nn.ParameterList(nn.Parameter(0.1 * torch.randn(*shape)) for shape in shapes)

    def forward(self, p: Tensor) -> Tensor:
        P, hr, wr, _ = p.shape
        if self.dense:  # [1, C, P, Hr, Wr]
            return F.grid_sample(self.grids[0], p.unsqueeze(0), align_corners=False).reshape(1, -1, hr, wr)
        uv = [t.reshape(1, P * hr, wr, 2) for t in (p[..., 0:2], p[..., 0:3:2], p[..., 1:3])]
        feats = []
        for planes in self.grids:
            xy, xz, yz = (F.grid_sample(planes[i:i + 1], g, align_corners=False) for i, g in enumerate(uv))
            feats.append((xy + xz + yz).reshape(1, -1, hr, wr))  # [1, C, P*Hr, Wr] is [1, C*P, Hr, Wr]
        return torch.cat(feats, 1) if len(feats) > 1 else feats[0]


class PosEnc(nn.Module):
    """NeRF positional encoding of each point: [P, Hr, Wr, 3] -> [1, P*3*(1+2L), Hr, Wr]."""

    def __init__(self, octaves: int) -> None:
        super().__init__()
        self.freq = (math.pi * 2.0 ** torch.arange(octaves)).reshape(1, octaves, 1, 1, 1)

    def forward(self, p: Tensor) -> Tensor:
        P, hr, wr, _ = p.shape
        x = p.permute(0, 3, 1, 2).reshape(1, 1, P * 3, hr, wr)
        a = (x * self.freq).reshape(1, -1, hr, wr)
        return torch.cat([x.reshape(1, P * 3, hr, wr), torch.sin(a), torch.cos(a)], 1)


class Body(nn.Module):
    """1x1-conv stem + ``layers`` 1x1 layers (ReLU, optional residual): [1, Cin, h, w] -> [1, W, h, w]."""

    def __init__(self, cin: int, width: int, layers: int, residual: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(cin, width, 1)
        self.layers = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(layers))
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.stem(x))
        for layer in self.layers:
            x = x + F.relu(layer(x)) if self.residual else F.relu(layer(x))
        return x


def tail(width: int, scale: int, kind: str) -> nn.Sequential:
    """Upsampling by ``scale`` to RGB logits: [1, W, h, w] -> [1, 3, h*scale, w*scale]."""
    if kind == "head":
        return nn.Sequential(nn.Conv2d(width, 3, 1))
    n = int(math.log2(scale))
    chans = [32 * 2 ** (n - 2 - i) for i in range(n - 1)] + [3]  # 1/4: [32, 3]; 1/8: [64, 32, 3]
    mods: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip([width, *chans], chans)):
        if kind == "convT":
            mods.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))
        else:
            k = 1 if i == n - 1 and kind == "d2s-last1x1" else 3
            mods += [nn.Conv2d(cin, 4 * cout, k, padding=k // 2), nn.PixelShuffle(2)]  # PixelShuffle: CRD
        mods += [nn.ReLU()] if i < n - 1 else []
    return nn.Sequential(*mods)


class DeviceStudent(nn.Module):
    """Camera to image: ``c2w`` [4, 4], ``K`` [3, 3] -> ``rgb`` [size, size, 3] in [0, 1]."""

    def __init__(self, spec: Spec, size: int) -> None:
        super().__init__()
        self.size, self.crop = size, size % spec.scale != 0
        self.rays = RayPoints(size, spec.scale, spec.points)
        pe = spec.encoder == "pe"
        self.encoder = PosEnc(OCTAVES) if pe else Features(spec.levels, spec.encoder == "dense")
        cin = spec.points * (3 * (1 + 2 * OCTAVES) if pe else sum(c for _, c in spec.levels))
        self.body = Body(cin, spec.width, spec.layers, spec.residual)
        self.tail = tail(spec.width, spec.scale, spec.tail)

    def forward(self, c2w: Tensor, K: Tensor) -> Tensor:
        img = torch.sigmoid(self.tail(self.body(self.encoder(self.rays(c2w, K)))))  # [1, 3, >=H, >=W]
        img = img[:, :, : self.size, : self.size] if self.crop else img
        return img.reshape(3, self.size, self.size).permute(1, 2, 0)


def camera(size: int, seed: int) -> dict[str, np.ndarray]:
    """A random camera 4 from the origin looking at it (OpenCV axes, z up in the world), f = 1.1 * size."""
    z = np.random.default_rng(seed).normal(size=3)
    z /= -np.linalg.norm(z)  # forward: the camera sits at -4 z
    x = np.cross(z, [0.0, 0.0, 1.0]) / np.linalg.norm(np.cross(z, [0.0, 0.0, 1.0]))
    c2w = np.eye(4, dtype=np.float32)
    c2w[:3, :3], c2w[:3, 3] = np.stack([x, np.cross(z, x), z], 1), -4.0 * z
    f, c = 1.1 * size, size / 2
    return {"c2w": c2w, "K": np.array([[f, 0, c], [0, f, c], [0, 0, 1]], dtype=np.float32)}


def export(model: nn.Module, size: int, opsets: tuple[int, ...] = (17, 20)) -> tuple[onnx.ModelProto, int]:
    """The static-shape ONNX graph of ``model`` (shapes inferred) at the first opset the exporter accepts."""
    args = tuple(torch.from_numpy(v) for v in camera(size, 0).values())
    for opset in opsets:
        buf = io.BytesIO()
        try:
            with torch.no_grad():
                torch.onnx.export(model, args, buf, input_names=["c2w", "K"],  # type: ignore[arg-type]
                                  output_names=["rgb"], opset_version=opset, dynamo=False)
        except Exception as exc:  # noqa: BLE001 - e.g. 5-D GridSample is written at opset 20 only
            log.warning("opset %d export failed: %s", opset, str(exc).splitlines()[0])
            continue
        return shape_inference.infer_shapes(onnx.load_from_string(buf.getvalue())), opset
    raise RuntimeError(f"no opset of {opsets} exports")


def graph_stats(model: onnx.ModelProto) -> tuple[float, int, list[str], list[str]]:
    """``(GFLOP per frame, peak activation bytes, op types, flags)`` of a graph with inferred shapes."""
    g = model.graph
    sh = {t.name: (list(t.dims), t.data_type) for t in g.initializer}
    for v in [*g.input, *g.value_info, *g.output]:
        sh[v.name] = ([d.dim_value for d in v.type.tensor_type.shape.dim], v.type.tensor_type.elem_type)
    flops, peak, flags = 0, 0, set()
    for n in g.node:
        outs = [sh.get(o, ([], 0)) for o in n.output]
        sizes = [int(np.prod(s)) * helper.tensor_dtype_to_np_dtype(t).itemsize for s, t in outs if t]
        peak = max([peak, *sizes]) if n.op_type != "Constant" else peak
        numel = int(np.prod(outs[0][0])) if outs and outs[0][0] else 0
        if n.op_type == "Conv":
            flops += 2 * numel * int(np.prod(sh[n.input[1]][0][1:]))
        elif n.op_type == "ConvTranspose":  # weight [Cin, Cout/g, kh, kw]
            flops += 2 * int(np.prod(sh[n.input[0]][0])) * int(np.prod(sh[n.input[1]][0][1:]))
        elif n.op_type in ("MatMul", "Gemm"):
            flops += 2 * numel * sh[n.input[0]][0][-1]  # K = A's last dimension (no transA here)
        elif n.op_type == "GridSample":
            flops += 2 * numel * 2 ** (len(outs[0][0]) - 2)
        if n.op_type not in ALLOWED or n.op_type in ARITH and any(t == TensorProto.INT64 for _, t in outs):
            flags.add(n.op_type if n.op_type not in ARITH else f"int64 {n.op_type}")
    return flops / 1e9, peak, sorted({n.op_type for n in g.node}), sorted(flags)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    """A CPU session: 2 intra-op threads (not spinning), 1 inter-op thread, all graph optimisations."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 2, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def describe(name: str, size: int | None, model: onnx.ModelProto | None, params: int, opset: int | None,
             error: str | None = None) -> Row:
    """A table row for one exported graph (``ms`` filled in by the timing)."""
    gflop, peak, ops, flags = graph_stats(model) if model is not None else (None, None, [], [])
    return {"candidate": name, "size": size, "ms": None, "repeats": 0, "gflop": gflop, "params": params,
            "peak_activation_bytes": peak, "opset": opset, "ops": ops, "flags": flags, "error": error}


def prepare(spec: Spec, size: int) -> tuple[Row, onnx.ModelProto | None, ort.InferenceSession | None]:
    """Build and export one candidate, open its session and compare it with torch on a second view."""
    torch.manual_seed(0)
    module = DeviceStudent(spec, size).eval()
    params = sum(p.numel() for p in module.parameters())
    try:
        model, opset = export(module, size)
    except RuntimeError as exc:
        return describe(spec.name, size, None, params, None, str(exc)), None, None
    rec, cam = describe(spec.name, size, model, params, opset), camera(size, 1)
    try:
        sess = session(model)
        out = sess.run(None, cam)[0]
    except Exception as exc:  # noqa: BLE001 - recorded as "unsupported" in the table
        rec["error"] = str(exc).splitlines()[0][:160]
        log.warning("%s %d: %s", spec.name, size, rec["error"])
        return rec, model, None
    with torch.no_grad():
        ref = module(torch.from_numpy(cam["c2w"]), torch.from_numpy(cam["K"])).numpy()
    assert out.shape == (size, size, 3), out.shape
    rec["max_abs_diff_vs_torch"] = float(np.abs(out - ref).max())
    return rec, model, sess


def time_interleaved(runners: Mapping[str, Callable[[], Any]], wanted: int, forced: Mapping[str, int]
                     ) -> dict[str, tuple[float, int]]:
    """``{key: (best ms, repeats)}`` of interleaved rounds; ``forced[key]`` or ``wanted`` repeats."""
    reps, best = {}, dict.fromkeys(runners, float("inf"))
    for key, fn in runners.items():
        start = time.perf_counter()
        fn()  # warm-up
        reps[key] = forced.get(key) or max(1, min(wanted, int(TIME_BUDGET_S / (time.perf_counter() - start))))
    for i in range(max(reps.values(), default=0)):
        for key, fn in runners.items():
            if i < reps[key]:
                start = time.perf_counter()
                fn()
                best[key] = min(best[key], time.perf_counter() - start)
    return {key: (best[key] * 1e3, reps[key]) for key in runners}


class Calibration:
    """Random cameras as quantisation calibration data (an onnxruntime ``CalibrationDataReader``)."""

    def __init__(self, size: int, n: int = 8) -> None:
        self.items: Iterator[dict[str, np.ndarray]] = iter([camera(size, 100 + i) for i in range(n)])

    def get_next(self) -> dict[str, np.ndarray] | None:  # the next input, None at the end
        return next(self.items, None)


def quantize(model: onnx.ModelProto, size: int) -> onnx.ModelProto:
    """Static QDQ int8 (per-channel int8 weights, uint8 activations) of an exported graph."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        quantize_static(str(src), str(dst), Calibration(size), quant_format=QuantFormat.QDQ,  # type: ignore
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return shape_inference.infer_shapes(onnx.load(dst))


def matmul_ref(n: int = 2048) -> tuple[Row, Callable[[], Any]]:
    """Reference row and runner: an ONNX fp32 MatMul n x n x n with the same session settings."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "w")
    x_info, y_info = (helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "xy")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm", [x_info], [y_info], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    sess, x = session(model), rng.standard_normal((n, n), dtype=np.float32)
    rec = describe(f"(reference: ONNX fp32 MatMul {n}^3)", None, model, n * n, 17)
    return rec, functools.partial(sess.run, None, {"x": x})


def table(rows: list[Row]) -> str:
    """The markdown table of ``rows``."""
    out = []
    for r in rows:
        ms = f"{r['ms']:.1f}" if r["ms"] is not None else f"unsupported ({r['error']})"
        gflop = ("n/a" if r["gflop"] is None else f"{r['gflop']:.3g}") + (
            f" ({r['gflop_s']:.0f} GFLOP/s)" if "gflop_s" in r else "")
        peak = "n/a" if r["peak_activation_bytes"] is None else f"{r['peak_activation_bytes'] / 2**20:.1f}"
        ops = ", ".join(r["ops"]) + (f"; **outside the set: {', '.join(r['flags'])}**" if r["flags"] else "")
        out.append([r["candidate"], f"{r['size']}x{r['size']}" if r["size"] else "-", ms, r["repeats"], gflop,
                    f"{r['params'] / 1e6:.3g} M", peak, f"{r['opset']}: {ops}"])
    headers = ["candidate", "output size", "ms (best)", "repeats", "GFLOP per frame", "parameters",
               "peak activation (largest tensor, MiB)", "opset: ops used"]
    return markdown_table(headers, out)


def int8_rows(rows: list[Row], models: dict[str, onnx.ModelProto], sizes: list[int], wanted: int
              ) -> tuple[list[Row], list[str]]:
    """int8 QDQ rows of the planes candidate with the most GFLOP within 40 ms at ``sizes[0]`` (else the
    fastest), each timed interleaved with its fp32 graph, and notes."""
    planes = [r for r in rows if r["candidate"].startswith("planes") and r["size"] == sizes[0] and r["ms"]]
    within = [r for r in planes if r["ms"] <= 40.0]
    best = max(within, key=lambda r: r["gflop"]) if within else min(planes, key=lambda r: r["ms"],
                                                                      default=None)
    if best is None:
        return [], []
    name, out = best["candidate"], []
    notes = [f"int8 QDQ row: {name} (the planes candidate with the most GFLOP within 40 ms at {sizes[0]}), "
             "quantize_static, per-channel int8 weights, uint8 activations, 8 random cameras as calibration "
             "data; QuantizeLinear/DequantizeLinear count as standard ops"]
    for size in sizes:
        key = f"{name} {size}"
        try:
            q = quantize(models[key], size)
            rec = describe(f"{name} int8 QDQ", size, q, best["params"], best["opset"])
            s8, s32, cam = session(q), session(models[key]), camera(size, 0)
            ms = time_interleaved({"int8": functools.partial(s8.run, None, cam),
                                   "fp32": functools.partial(s32.run, None, cam)}, wanted, {})
        except Exception as exc:  # noqa: BLE001 - the note says why the int8 row is missing
            notes.append(f"int8 QDQ of {name} at {size} failed: {str(exc).splitlines()[0][:200]}")
            continue
        rec["ms"], rec["repeats"] = ms["int8"]
        out.append(rec)
        notes.append(f"int8 vs fp32 of {name} at {size}x{size}, timed in the same rounds: "
                     f"{ms['int8'][0]:.1f} vs {ms['fp32'][0]:.1f} ms ({ms['fp32'][0] / ms['int8'][0]:.2f}x)")
    return out, notes


def run_size(specs: list[Spec], size: int, wanted: int, models: dict[str, onnx.ModelProto],
             extra: tuple[Row, Callable[[], Any]] | None = None) -> list[Row]:
    """Rows of ``specs`` and ``extra`` at one size, timed in interleaved rounds (graphs into ``models``)."""
    recs: dict[str, Row] = {}
    runners: dict[str, Callable[[], Any]] = {}
    forced: dict[str, int] = {}
    for spec in specs:
        key = f"{spec.name} {size}"
        recs[key], model, sess = prepare(spec, size)
        if model is not None:
            models[key] = model
        if sess is not None:
            runners[key], forced[key] = functools.partial(sess.run, None, camera(size, 0)), spec.repeats
    if extra is not None:
        recs["ref"], runners["ref"] = extra
    for key, (ms, reps) in time_interleaved(runners, wanted, forced).items():
        recs[key]["ms"], recs[key]["repeats"] = ms, reps
        log.info("%s: %.1f ms", key, ms)
    return list(recs.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed frames per row (fewer for slow rows)")
    parser.add_argument("--only", default=None, help="run only candidates whose name contains this")
    parser.add_argument("--sizes", default="400,100", help="output sizes, comma-separated")
    parser.add_argument("--json", default=str(DEFAULT_JSON))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    sizes = [int(s) for s in args.sizes.split(",")]
    specs = [s for s in CANDIDATES if args.only is None or args.only in s.name]
    models: dict[str, onnx.ModelProto] = {}
    extra = {sizes[0]: matmul_ref()}  # the reference row, timed in the rounds of the first size
    rows = [r for size in sizes for r in run_size(specs, size, args.repeats, models, extra.get(size))]
    ref = extra[sizes[0]][0]
    ref["gflop_s"] = ref["gflop"] / ref["ms"] * 1e3
    q_rows, notes = int8_rows(rows, models, sizes, args.repeats)
    rows = sorted(rows + q_rows, key=lambda r: r["size"] is None)  # the reference last
    text = table(rows)
    print(text)
    worst = max((r.get("max_abs_diff_vs_torch", 0.0) for r in rows), default=0.0)
    notes.append(f"MatMul reference timed in the {sizes[0]} px rounds; fp32 graphs vs torch on another view: "
                 f"max |ORT - torch| {worst:.2g}; ONNX Runtime {ort.__version__}, onnx {onnx.__version__}")
    write_section("device_student", f"{text}\n\n{NOTES}\n\n" + "\n".join(f"- {n}" for n in notes))
    Path(args.json).write_text(json.dumps({"onnxruntime": ort.__version__, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
