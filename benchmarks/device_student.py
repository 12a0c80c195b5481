"""Speed study of the device student (issue 24): standard-op ONNX graphs drawing a whole view on 2 CPU cores.

Each candidate is a torch module with the device graph's camera contract -- inputs ``c2w`` [4, 4] and ``K``
[3, 3] (intrinsics in pixels of the output image), output ``rgb`` [H, W, 3] -- that builds its rays inside
the graph from a constant pixel grid (OpenCV convention, d = R K^-1 [u+0.5, v+0.5, 1], float ops only).
It is exported with random weights (speed does not depend on them) to a static-shape ONNX graph and run by
ONNX Runtime's CPU provider with 2 intra-op threads; the table gives ms per frame (best of repeats), GFLOP
per frame and the peak activation counted from the exported graph, parameters, and the op types used,
flagging any outside the device op set. Reference row: an ONNX fp32 MatMul 2048^3 (this CPU's GFLOP/s).

    python -m benchmarks.device_student [--repeats 5] [--only NAME] [--sizes 400,100] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator
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
DEFAULT_JSON = Path(__file__).resolve().parent / "device_student.json"
BOX = 1.5  # content box [-1.5, 1.5]^3
NEAR, FAR = 2.0, 6.0  # fixed z-depths of the points along each ray (camera ~4 from the origin)
ALLOWED = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Gelu",
           "Erf", "Tanh", "Sin", "Cos", "Sqrt", "Neg", "GridSample", "DepthToSpace", "Resize", "Reshape",
           "Transpose", "Concat", "Slice", "Squeeze", "Unsqueeze", "Constant", "Identity"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}  # allowed in the int8 row only
ARITH = {"Add", "Sub", "Mul", "Div"}
TIME_BUDGET_S = 3.0  # per candidate and size: fewer repeats when one frame is slow
NOTES = (
    "ms: best of the repeats after one warm-up (ONNX Runtime CPU provider, 2 intra-op threads, 1 inter-op, "
    "graph optimisation ALL, one frame per call); rows whose first frame takes over "
    f"{TIME_BUDGET_S:.0f} s / repeats get fewer repeats (the repeats column). GFLOP per frame: 2 x the MACs "
    "of Conv, ConvTranspose, MatMul and Gemm plus 2 FLOP per corner and channel of each GridSample output "
    "(4 corners bilinear, 8 trilinear), counted from the exported graph's inferred shapes; element-wise ops "
    "(ray building, encoding, activations) are not counted. Peak activation: the largest single "
    "intermediate tensor of the exported graph (fp32), not the sum of live tensors. Parameters: the "
    "torch module's trainable parameters (feature planes/grids included, constant pixel grids not). "
    "Candidates: planes-1/s = ray map at 1/s of the output, 8 points per ray at fixed depths, summed "
    "tri-plane features (3 planes 256^2 x 16 ch, one 4-D GridSample per plane, bilinear, zeros, "
    "align_corners=False) concatenated over points to 128 channels, a 1x1-conv body (96 wide, stem + 3 "
    "residual layers), then an upsampling tail of 3x3 conv + DepthToSpace(2) stages (-last1x1: last stage "
    "1x1 conv; -convT: ConvTranspose k4 s2 stages); planes-ms: 3 plane levels 64/128/256 x 8 ch; "
    "per-pixel-planes: full-resolution 64->64->64->3 1x1 convs on 4 points; mobile-r2l-slim: 312-channel "
    "positional encoding, 7 1x1 convs 128 wide; hash-dense-baseline: 32 points per ray in a dense 64^3 x 8 "
    "grid (5-D GridSample, which the torch exporter only writes at opset 20) and a 4 x 64 per-pixel MLP. "
    "Sizes not divisible by the ray-map factor are drawn one tile larger and cropped (Slice)."
)


@dataclasses.dataclass(frozen=True)
class Spec:
    """One candidate architecture."""

    name: str
    scale: int  # ray map at 1/scale of the output resolution
    points: int  # points per ray
    encoder: str  # "planes", "pe" or "dense"
    levels: tuple[tuple[int, int], ...] = ((256, 16),)  # (resolution, channels) per plane level
    width: int = 96
    layers: int = 3  # residual 1x1 layers after the stem
    residual: bool = True
    tail: str = "d2s"  # "d2s", "d2s-last1x1", "convT" or "head" (1x1 conv to RGB, no upsampling)
    octaves: int = 6
    repeats: int | None = None  # forced number of repeats (slow rows)


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
    Spec("hash-dense-baseline", 1, 32, "dense", levels=((64, 8),), width=64, layers=3, residual=False,
         tail="head", repeats=1),
]


class RayPoints(nn.Module):
    """Points along the rays of a ray map at 1/``scale`` of an ``size`` x ``size`` view, in box units."""

    def __init__(self, size: int, scale: int, points: int) -> None:
        super().__init__()
        self.hr = self.wr = math.ceil(size / scale)
        centres = (torch.arange(self.hr, dtype=torch.float32) + 0.5) * scale  # output-pixel units
        v, u = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("u", u.reshape(-1, 1))
        self.register_buffer("v", v.reshape(-1, 1))
        self.register_buffer("depth", torch.linspace(NEAR, FAR, points).reshape(points, 1, 1, 1))

    def forward(self, c2w: Tensor, K: Tensor) -> Tensor:
        """``c2w`` [4, 4], ``K`` [3, 3] -> points [P, Hr, Wr, 3] scaled so the box is [-1, 1]^3."""
        y = (self.v - K[1:2, 2:3]) / K[1:2, 1:2]  # [Hr*Wr, 1]
        x = (self.u - K[0:1, 2:3] - K[0:1, 1:2] * y) / K[0:1, 0:1]
        cols = c2w[0:3, 0:3].transpose(0, 1)  # rows = camera axes in world coordinates
        d = x * cols[0:1] + y * cols[1:2] + cols[2:3]  # [Hr*Wr, 3], z-depth 1
        o = c2w[0:3, 3:4].reshape(1, 1, 1, 3)
        return (o + self.depth * d.reshape(1, self.hr, self.wr, 3)) * (1.0 / BOX)


class TriPlanes(nn.Module):
    """Summed xy/xz/yz plane features per point, levels concatenated: [P, Hr, Wr, 3] -> [1, P*C, Hr, Wr]."""

    def __init__(self, levels: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        self.planes = nn.ParameterList(nn.Parameter(0.1 * torch.randn(3, c, r, r)) for r, c in levels)

    def forward(self, p: Tensor) -> Tensor:
        P, hr, wr, _ = p.shape
        grids = [t.reshape(1, P * hr, wr, 2) for t in (p[..., 0:2], p[..., 0:3:2], p[..., 1:3])]
        feats = []
        for planes in self.planes:
            c = planes.shape[1]
            xy, xz, yz = (F.grid_sample(planes[i:i + 1], g, align_corners=False) for i, g in enumerate(grids))
            f = xy + xz + yz  # [1, C, P*Hr, Wr]
            feats.append(f.reshape(1, c * P, hr, wr))  # [1, C, P*Hr, Wr] is [1, C*P, Hr, Wr] in memory
        return torch.cat(feats, 1) if len(feats) > 1 else feats[0]


class DenseGrid(nn.Module):
    """Trilinear features of a dense grid (5-D GridSample): [P, Hr, Wr, 3] -> [1, C*P, Hr, Wr]."""

    def __init__(self, res: int, channels: int) -> None:
        super().__init__()
        self.grid = nn.Parameter(0.1 * torch.randn(1, channels, res, res, res))

    def forward(self, p: Tensor) -> Tensor:
        P, hr, wr, _ = p.shape
        f = F.grid_sample(self.grid, p.unsqueeze(0), align_corners=False)  # [1, C, P, Hr, Wr]
        return f.reshape(1, self.grid.shape[1] * P, hr, wr)


class PosEnc(nn.Module):
    """NeRF positional encoding of each point: [P, Hr, Wr, 3] -> [1, P*3*(1+2L), Hr, Wr]."""

    freq: Tensor

    def __init__(self, octaves: int) -> None:
        super().__init__()
        self.register_buffer("freq", (math.pi * 2.0 ** torch.arange(octaves)).reshape(1, octaves, 1, 1, 1))

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
            y = F.relu(layer(x))
            x = x + y if self.residual else y
        return x


def tail(width: int, scale: int, kind: str) -> nn.Sequential:
    """Upsampling by ``scale`` to RGB logits: [1, W, h, w] -> [1, 3, h*scale, w*scale]."""
    if kind == "head":
        return nn.Sequential(nn.Conv2d(width, 3, 1))
    n = int(math.log2(scale))
    chans = [32 * 2 ** (n - 2 - i) for i in range(n - 1)] + [3]  # 1/4: [32, 3]; 1/8: [64, 32, 3]
    mods: list[nn.Module] = []
    cin = width
    for i, cout in enumerate(chans):
        last = i == n - 1
        if kind == "convT":
            mods.append(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1))
        else:
            k = 1 if last and kind == "d2s-last1x1" else 3
            mods += [nn.Conv2d(cin, 4 * cout, k, padding=k // 2), nn.PixelShuffle(2)]
        if not last:
            mods.append(nn.ReLU())
        cin = cout
    return nn.Sequential(*mods)


class DeviceStudent(nn.Module):
    """Camera to image: ``c2w`` [4, 4], ``K`` [3, 3] -> ``rgb`` [size, size, 3] in [0, 1]."""

    def __init__(self, spec: Spec, size: int) -> None:
        super().__init__()
        self.size = size
        self.rays = RayPoints(size, spec.scale, spec.points)
        self.encoder: nn.Module
        if spec.encoder == "planes":
            self.encoder, cin = TriPlanes(spec.levels), spec.points * sum(c for _, c in spec.levels)
        elif spec.encoder == "pe":
            self.encoder, cin = PosEnc(spec.octaves), spec.points * 3 * (1 + 2 * spec.octaves)
        else:
            (res, c), = spec.levels
            self.encoder, cin = DenseGrid(res, c), spec.points * c
        self.body = Body(cin, spec.width, spec.layers, spec.residual)
        self.tail = tail(spec.width, spec.scale, spec.tail)

    def forward(self, c2w: Tensor, K: Tensor) -> Tensor:
        img = torch.sigmoid(self.tail(self.body(self.encoder(self.rays(c2w, K)))))  # [1, 3, >=H, >=W]
        if img.shape[-1] != self.size:
            img = img[:, :, : self.size, : self.size]
        return img.reshape(3, self.size, self.size).permute(1, 2, 0)


def camera(size: int, seed: int) -> dict[str, np.ndarray]:
    """A random look-at camera 4 units from the origin (OpenCV axes) and a ~49 degree pinhole K."""
    rng = np.random.default_rng(seed)
    pos = rng.normal(size=3)
    pos *= 4.0 / np.linalg.norm(pos)
    z = -pos / 4.0
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    c2w = np.eye(4, dtype=np.float32)
    c2w[:3, :3] = np.stack([x, np.cross(z, x), z], 1)
    c2w[:3, 3] = pos
    f = 1.1 * size
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], dtype=np.float32)
    return {"c2w": c2w, "K": K}


def export(model: nn.Module, size: int, opset: int) -> onnx.ModelProto:
    """The TorchScript-exporter ONNX graph of ``model`` with static shapes, shapes inferred."""
    cam = camera(size, 0)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model, (torch.from_numpy(cam["c2w"]), torch.from_numpy(cam["K"])), buf,  # type: ignore[arg-type]
                          input_names=["c2w", "K"], output_names=["rgb"], opset_version=opset, dynamo=False)
    return shape_inference.infer_shapes(onnx.load_from_string(buf.getvalue()))


def export_any(model: nn.Module, size: int, opsets: tuple[int, ...] = (17, 20)
               ) -> tuple[onnx.ModelProto, int]:
    """Export at the first opset of ``opsets`` that the exporter accepts."""
    for opset in opsets:
        try:
            return export(model, size, opset), opset
        except Exception as exc:  # noqa: BLE001 - e.g. 5-D GridSample is written at opset 20 only
            log.warning("opset %d export failed: %s", opset, str(exc).splitlines()[0])
    raise RuntimeError(f"no opset of {opsets} exports")


def shapes(model: onnx.ModelProto) -> dict[str, tuple[list[int], int]]:
    """Static shape and element type of every named tensor of the graph."""
    g = model.graph
    out = {t.name: (list(t.dims), t.data_type) for t in g.initializer}
    for v in [*g.input, *g.value_info, *g.output]:
        t = v.type.tensor_type
        out[v.name] = ([d.dim_value for d in t.shape.dim], t.elem_type)
    return out


def graph_stats(model: onnx.ModelProto) -> tuple[float, int, list[str], list[str]]:
    """``(GFLOP per frame, peak activation bytes, op types, flags)`` of an exported graph."""
    sh = shapes(model)
    flops, peak, flags = 0, 0, set()
    for n in model.graph.node:
        outs = [sh.get(o, ([], 0)) for o in n.output]
        if n.op_type != "Constant":
            peak = max([peak] + [int(np.prod(s)) * helper.tensor_dtype_to_np_dtype(t).itemsize
                                 for s, t in outs if t])
        out_numel = int(np.prod(outs[0][0])) if outs and outs[0][0] else 0
        if n.op_type == "Conv":
            flops += 2 * out_numel * int(np.prod(sh[n.input[1]][0][1:]))
        elif n.op_type == "ConvTranspose":
            cin, cout_g, kh, kw = sh[n.input[1]][0]
            flops += 2 * int(np.prod(sh[n.input[0]][0])) * cout_g * kh * kw
        elif n.op_type in ("MatMul", "Gemm"):
            flops += 2 * out_numel * sh[n.input[1]][0][0]
        elif n.op_type == "GridSample":
            flops += 2 * out_numel * 2 ** (len(outs[0][0]) - 2)
        if n.op_type not in ALLOWED | QDQ_OPS:
            flags.add(n.op_type)
        if n.op_type in ARITH and any(t == TensorProto.INT64 for _, t in outs):
            flags.add(f"int64 {n.op_type}")
    ops = sorted({n.op_type for n in model.graph.node})
    return flops / 1e9, peak, ops, sorted(flags)


def session(model: onnx.ModelProto | bytes) -> ort.InferenceSession:
    """A CPU session with 2 intra-op threads, 1 inter-op thread and all graph optimisations."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 2, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def best_ms(fn: Callable[[], Any], repeats: int | None, wanted: int) -> tuple[float, int]:
    """``(best ms, repeats run)`` of ``fn`` after a warm-up; fewer than ``wanted`` when a frame is slow."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    n = repeats or max(1, min(wanted, int(TIME_BUDGET_S / max(first, 1e-6))))
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3, n


def row(name: str, size: int, model: onnx.ModelProto, params: int, opset: int, repeats: int | None,
        wanted: int) -> dict[str, Any]:
    """Time one exported graph and describe it; ``ms`` is None with an ``error`` when ORT cannot run it."""
    gflop, peak, ops, flags = graph_stats(model)
    rec: dict[str, Any] = {"candidate": name, "size": size, "ms": None, "repeats": 0, "gflop": gflop,
                           "params": params, "peak_activation_bytes": peak, "opset": opset, "ops": ops,
                           "flags": flags, "error": None}
    try:
        sess = session(model)
        cam = camera(size, 0)
        rec["ms"], rec["repeats"] = best_ms(lambda: sess.run(None, cam), repeats, wanted)
        rec["_sess"] = sess
    except Exception as exc:  # noqa: BLE001 - recorded as "unsupported" in the table
        rec["error"] = str(exc).splitlines()[0][:160]
        log.warning("%s %d: %s", name, size, rec["error"])
    return rec


def check_parity(module: nn.Module, rec: dict[str, Any]) -> None:
    """Store the largest |ORT - torch| of one random view in ``rec`` (the export must keep the contract)."""
    sess = rec.pop("_sess", None)
    if sess is None:
        return
    cam = camera(rec["size"], 1)
    with torch.no_grad():
        ref = module(torch.from_numpy(cam["c2w"]), torch.from_numpy(cam["K"])).numpy()
    out = sess.run(None, cam)[0]
    assert out.shape == (rec["size"], rec["size"], 3), out.shape
    rec["max_abs_diff_vs_torch"] = float(np.abs(out - ref).max())


class Calibration:
    """Random cameras as quantisation calibration data (an onnxruntime ``CalibrationDataReader``)."""

    def __init__(self, size: int, n: int = 8) -> None:
        self.items: Iterator[dict[str, np.ndarray]] = iter([camera(size, 100 + i) for i in range(n)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next calibration input, None at the end."""
        return next(self.items, None)


def int8_row(spec: Spec, size: int, model: onnx.ModelProto, params: int, wanted: int) -> dict[str, Any]:
    """The static QDQ int8 (per-channel int8 weights, uint8 activations) variant of an exported graph."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        quantize_static(str(src), str(dst), Calibration(size), quant_format=QuantFormat.QDQ,  # type: ignore
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        q = shape_inference.infer_shapes(onnx.load(dst))
    rec = row(f"{spec.name} int8 QDQ", size, q, params, model.opset_import[0].version, None, wanted)
    rec.pop("_sess", None)
    return rec


def matmul_row(wanted: int, n: int = 2048) -> dict[str, Any]:
    """Reference: an ONNX fp32 MatMul n x n x n on the same session settings (GFLOP/s in ``gflop_s``)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], [w])
    sess = session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9))
    x = rng.standard_normal((n, n), dtype=np.float32)
    ms, reps = best_ms(lambda: sess.run(None, {"x": x}), None, wanted)
    gflop = 2 * n**3 / 1e9
    return {"candidate": f"(reference: ONNX fp32 MatMul {n}^3)", "size": None, "ms": ms, "repeats": reps,
            "gflop": gflop, "gflop_s": gflop / ms * 1e3, "params": n * n, "peak_activation_bytes": 4 * n * n,
            "opset": 17, "ops": ["MatMul"], "flags": [], "error": None}


def run_candidate(spec: Spec, size: int, wanted: int) -> tuple[dict[str, Any], onnx.ModelProto | None]:
    """Build, export, time and check one candidate at one output size."""
    torch.manual_seed(0)
    module = DeviceStudent(spec, size).eval()
    params = sum(p.numel() for p in module.parameters())
    try:
        model, opset = export_any(module, size)
    except RuntimeError as exc:
        return {"candidate": spec.name, "size": size, "ms": None, "repeats": 0, "gflop": None,
                "params": params, "peak_activation_bytes": None, "opset": None, "ops": [], "flags": [],
                "error": str(exc)}, None
    rec = row(spec.name, size, model, params, opset, spec.repeats, wanted)
    check_parity(module, rec)
    log.info("%s %d: %s ms", spec.name, size, rec["ms"])
    return rec, model


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of ``rows``."""
    out = []
    for r in rows:
        size = f"{r['size']}x{r['size']}" if r["size"] else "-"
        ms = f"{r['ms']:.1f}" if r["ms"] is not None else f"unsupported ({r['error']})"
        gflop = "n/a" if r["gflop"] is None else f"{r['gflop']:.3g}"
        if "gflop_s" in r:
            gflop += f" ({r['gflop_s']:.0f} GFLOP/s)"
        peak = "n/a" if r["peak_activation_bytes"] is None else f"{r['peak_activation_bytes'] / 2**20:.1f} MiB"
        ops = ", ".join(r["ops"]) + (f"; **outside the set: {', '.join(r['flags'])}**" if r["flags"] else "")
        out.append([r["candidate"], size, ms, r["repeats"], gflop, f"{r['params'] / 1e6:.3g} M", peak,
                    f"{r['opset']}: {ops}"])
    headers = ["candidate", "output size", "ms (best)", "repeats", "GFLOP per frame", "parameters",
               "peak activation (largest tensor)", "opset: ops used"]
    return markdown_table(headers, out)


def pick_int8(rows: list[dict[str, Any]], size: int, budget_ms: float = 40.0) -> str | None:
    """The planes candidate with the most GFLOP within ``budget_ms`` at ``size`` (else the fastest)."""
    planes = [r for r in rows if r["candidate"].startswith("planes") and r["size"] == size and r["ms"]]
    within = [r for r in planes if r["ms"] <= budget_ms]
    best = max(within, key=lambda r: r["gflop"]) if within else min(planes, key=lambda r: r["ms"], default=None)
    return best["candidate"] if best else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed frames per row (fewer for slow rows)")
    parser.add_argument("--only", default=None, help="run only candidates whose name contains this")
    parser.add_argument("--sizes", default="400,100", help="output sizes, comma-separated")
    parser.add_argument("--json", default=str(DEFAULT_JSON))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("root").setLevel(logging.WARNING)
    torch.set_num_threads(2)
    sizes = [int(s) for s in args.sizes.split(",")]
    specs = [s for s in CANDIDATES if args.only is None or args.only in s.name]
    rows: list[dict[str, Any]] = []
    models: dict[tuple[str, int], onnx.ModelProto] = {}
    for spec in specs:
        for size in sizes:
            rec, model = run_candidate(spec, size, args.repeats)
            rows.append(rec)
            if model is not None:
                models[spec.name, size] = model
    notes = [NOTES]
    chosen = pick_int8(rows, sizes[0])
    if chosen is not None:
        spec = next(s for s in specs if s.name == chosen)
        for size in sizes:
            params = next(r["params"] for r in rows if r["candidate"] == chosen and r["size"] == size)
            try:
                rows.append(int8_row(spec, size, models[chosen, size], params, args.repeats))
            except Exception as exc:  # noqa: BLE001 - the note says why the int8 row is missing
                notes.append(f"int8 QDQ of {chosen} at {size} failed: {str(exc).splitlines()[0][:200]}")
        notes.append(f"int8 QDQ row: {chosen} (the planes candidate with the most GFLOP within 40 ms at "
                     f"{sizes[0]}x{sizes[0]}), quantize_static, per-channel int8 weights, uint8 activations, "
                     "8 random cameras as calibration data; QuantizeLinear/DequantizeLinear are standard ops")
    rows.append(matmul_row(args.repeats))
    text = table(rows)
    print(text)
    diffs = {f"{r['candidate']} {r['size']}": r["max_abs_diff_vs_torch"] for r in rows
             if "max_abs_diff_vs_torch" in r}
    worst = max(diffs.values(), default=0.0)
    notes.append(f"every fp32 graph matches its torch module on a second random view (max |ORT - torch| "
                 f"{worst:.2g} over all rows); ONNX Runtime {ort.__version__}, onnx {onnx.__version__}")
    write_section("device_student", f"{text}\n\n" + "\n\n".join(notes))
    Path(args.json).write_text(json.dumps({"onnxruntime": ort.__version__, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
