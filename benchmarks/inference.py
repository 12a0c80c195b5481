"""Inference benchmark: one 100x100 frame of the demo scene, teacher vs student (PyTorch and ONNX).

Rows: the teacher (best hash-grid backend; skipped with a note when no teacher checkpoint exists), the
PyTorch student in fp32 and under bf16 autocast, and the ONNX student in fp32, fp16, int8 (dynamic,
MatMulInteger) and int8 (static QDQ), all timed on the same rays, interleaved, best of ``--repeats``.
Baselines in the same run: torch fp32 / bf16 matrix products (this CPU's peaks) and an ONNX Runtime
int8 MatMulInteger of the same size.

The student is ``<run-dir>/student/student.ckpt``; without one, a freshly initialised student of the
``profile=cpu`` shape is used (speed only: PSNR columns are n/a). Nothing is trained here. The ONNX
files are exported into a temporary folder with the same functions as ``python -m export.onnx``.

    python -m benchmarks.inference [--run-dir runs/mic_100] [--teacher PATH] [--repeats 7] [--psnr-views 8]
        [--size 400] [--json PATH]

``--size N`` times an N x N frame of test view 0's pose (intrinsics scaled, same field of view) instead of
the scene's own size; PSNR columns stay on the scene's test views. Every run also writes a JSON file
(``--json``, default ``benchmarks/inference_<size>.json``) with the teacher's and every variant's ms per
frame and PSNR, so ratios can be read by scripts. For a ``hash`` student there is nothing to fold:
its "fused" rows run the same graph as ONNX fp32.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from benchmarks.results import markdown_table, write_section
from core.io import write_json
from export.fused import FusedEncodingStudent
from export.onnx import Int8Config, calibration_rays
from export.parity import mean_view_psnr, random_scene_rays, torch_rgb, view_rays
from export.runtime import DEFAULT_BATCH, LightField, ModelMeta, rays_meet_box
from export.runtime.meta import SceneFacts
from export.variants import save_checked, set_metadata, to_fp16, to_int8, trace_student
from pipeline.config import to_dataclass
from scenes.load import load_scene
from student.checkpoint import load_student
from student.config import StudentConfig, for_scene
from student.model import R2LStudent, flops_per_ray
from teacher.protocol import RenderableTeacher
from testing.stages import compose

log = logging.getLogger(__name__)
NOTES = (
    "\"fused\": the ray encoding folded into matrix products (export/fused.py: one Sin over all the sine "
    "arguments, no wide Concat). \"misses skipped\": the runtime's default (export.runtime.LightField): "
    "rays that miss the content box are given the background without running the graph, which would "
    "give them the background too; GFLOP/s of those rows count the rays evaluated. int8: ONNX Runtime "
    "quantization (uint8 activations, int8 per-channel weights unless \"per-tensor\"; QDQ = static ranges "
    "calibrated on training rays that meet the content box, dynamic = per-call ranges), executed by "
    "MLAS integer GEMMs, which use AMX-int8/VNNI on this CPU (the MatMulInteger row). ONNX Runtime's CPU "
    "provider has no bf16 GEMM (the bf16 row), so AMX-bf16 is reachable from PyTorch only; fp16 graphs run "
    "through casts to fp32 on x86 (no speed-up: that variant is for GPUs and mobile/web runtimes)."
)
ONE_CALL_MAX_RAYS = 16384  # larger frames are timed in batches only
SKIP = "misses skipped"  # LightField(skip_misses=True): rays that miss the content box are not evaluated
SKIP_VARIANTS = ("fp32_fused", "int8_dynamic", "int8_qdq_pt")
ORT_VARIANTS = {"fp32": "ONNX fp32", "fp32_fused": "ONNX fp32 fused", "fp16": "ONNX fp16 fused",
                "int8_dynamic": "ONNX int8 dynamic fused", "int8_qdq": "ONNX int8 QDQ fused",
                "int8_qdq_pt": "ONNX int8 QDQ per-tensor fused"}


def best_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Best wall time of ``fn`` in ms over ``repeats`` calls after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def matmul_peaks(repeats: int, n: int = 2048) -> dict[str, float]:
    """GFLOP/s of ``n``-cube matrix products: torch fp32, torch bf16 (AMX) and ORT int8 (MatMulInteger)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    flops = 2 * n**3
    peaks = {"torch fp32 matmul": flops / best_ms(lambda: a @ b, repeats) / 1e6}
    ab, bb = a.bfloat16(), b.bfloat16()
    peaks["torch bf16 matmul"] = flops / best_ms(lambda: ab @ bb, repeats) / 1e6
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).integers(-127, 127, (n, n), dtype=np.int8), "w")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).integers(0, 255, (n, n), dtype=np.uint8)
    peaks["ORT int8 MatMulInteger"] = flops / best_ms(lambda: sess.run(None, {"x": x}), repeats) / 1e6
    bf16 = helper.make_graph([helper.make_node("MatMul", ["x", "y"], ["z"])], "bf16",
                             [helper.make_tensor_value_info(k, TensorProto.BFLOAT16, [8, 8]) for k in "xy"],
                             [helper.make_tensor_value_info("z", TensorProto.BFLOAT16, [8, 8])])
    try:  # the only route to AMX-bf16 would be a bf16 MatMul kernel in the CPU provider
        bf16_model = helper.make_model(bf16, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
        ort.InferenceSession(bf16_model.SerializeToString(), providers=["CPUExecutionProvider"])
        peaks["ORT bf16 MatMul (kernel exists)"] = float("nan")
    except Exception:  # noqa: BLE001 - NOT_IMPLEMENTED is the expected answer on the CPU provider
        log.info("ONNX Runtime's CPU provider has no bf16 MatMul")
        peaks["ORT bf16 MatMul: no CPU kernel"] = float("nan")
    return peaks


def get_student(run_dir: Path, shape: list[int] | None) -> tuple[R2LStudent, bool, str]:
    """The trained student of ``run_dir``, or a fresh one of the ``profile=cpu`` shape (or ``shape``)."""
    ckpt = run_dir / "student" / "student.ckpt"
    if ckpt.is_file() and shape is None:
        return load_student(ckpt)[0], True, str(ckpt)
    cfg = for_scene(to_dataclass(compose("student"), StudentConfig), forward_facing=False).model
    if shape is not None:
        cfg.width, cfg.depth = shape
    scene = load_scene(None, splits=("train",))
    model = R2LStudent(cfg, scene.aabb, scene.near, scene.far).eval()
    why = "--shape given" if shape is not None else f"no {ckpt}"
    return model, False, f"freshly initialised student ({why}; speed only)"


def export_all(model: R2LStudent, scene: Any, out: Path) -> dict[str, Path]:
    """Write the ONNX variants of ``model`` into ``out`` (fp16 and int8 with the fused encoding)."""
    train = scene.split("train")
    gen = torch.Generator().manual_seed(0)
    example = random_scene_rays(train.c2w, scene.aabb, 1024, gen)
    fp32 = trace_student(model, example, static=False, opset=18)
    fused = (trace_student(FusedEncodingStudent(model).eval(), example, static=False, opset=18)
             if model.cfg.encoding == "pe" else _copy(fp32))
    calib = calibration_rays(scene, Int8Config(), model, gen)  # as export.onnx: rays that meet the box
    facts = SceneFacts(aabb=scene.aabb.tolist(), content_aabb=model.encoder.box.tolist(),
                       near=model.encoder.near, far=model.encoder.far, image_size=list(train.hw),
                       K=train.K[0].tolist(), scene_name=scene.name, background=[1.0, 1.0, 1.0])
    meta = ModelMeta(scene=facts, flops_per_ray=flops_per_ray(model.cfg),
                     student=dataclasses.asdict(model.cfg), encoding=model.cfg.encoding)
    protos = {"fp32": fp32, "fp32_fused": fused, "fp16": to_fp16(_copy(fused)),
              "int8_dynamic": to_int8(_copy(fused), "dynamic"),
              "int8_qdq": to_int8(_copy(fused), "qdq", calib),
              "int8_qdq_pt": to_int8(_copy(fused), "qdq", calib, per_channel=False)}
    return {name: save_checked(set_metadata(p, meta), out / f"{name}.onnx") for name, p in protos.items()}


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def load_teacher_or_note(ckpt: Path) -> tuple[RenderableTeacher | None, str]:
    """``(teacher, note)``; ``(None, reason)`` when there is no usable teacher checkpoint."""
    if not ckpt.is_file():
        return None, f"teacher skipped: no {ckpt}"
    try:
        from teacher.checkpoint import load_teacher

        teacher = load_teacher(ckpt, backend="auto")
    except Exception as exc:  # noqa: BLE001 - the benchmark reports any failure as a note and goes on
        return None, f"teacher skipped: {str(exc).splitlines()[0]}"
    return teacher, f"teacher: {ckpt} (hash-grid backend {teacher.backend})"


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "n/a" if value is None or not np.isfinite(value) else format(value, spec)


def time_rounds(runners: dict[str, Callable[[], Any]], repeats: int, pause_s: float = 0.0
                ) -> dict[str, list[float]]:
    """ms of every timed call of each runner, after one warm-up call each; rounds interleave the runners
    so machine load hits every row alike. ``pause_s``: seconds of sleep before each timed call (the worker
    threads of the previous row's runtime, which spin a while after a call, are idle again)."""
    for fn in runners.values():
        fn()  # warm-up
    ms: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            time.sleep(pause_s)
            start = time.perf_counter()
            fn()
            ms[name].append((time.perf_counter() - start) * 1e3)
    return ms


def time_interleaved(runners: dict[str, Callable[[], Any]], repeats: int, pause_s: float = 0.0
                     ) -> dict[str, float]:
    """Best ms of each runner over :func:`time_rounds` (``inf`` when ``repeats`` is 0)."""
    return {name: min(t, default=float("inf")) for name, t in time_rounds(runners, repeats, pause_s).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/mic_100")
    parser.add_argument("--teacher", default=None, help="default: <run-dir>/teacher/teacher.ckpt")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--psnr-views", type=int, default=8, help="test views for the PSNR column")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="rays per inference call")
    parser.add_argument("--shape", type=int, nargs=2, metavar=("WIDTH", "DEPTH"), default=None,
                        help="time a fresh student of this width and depth (e.g. the paper's 256 88)")
    parser.add_argument("--size", type=int, default=None, help="time an N x N frame (default: the scene's)")
    parser.add_argument("--json", default=None, help="default: benchmarks/inference_<size>.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run_dir = Path(args.run_dir)
    scene = load_scene(None, splits=("train", "test"))
    test = scene.split("test")
    model, trained, student_note = get_student(run_dir, args.shape)
    views = view_rays(test, args.psnr_views)
    gt = test.rgb(scene.background)[: len(views)].reshape(len(views), -1, 3).numpy()
    frame = views[0]
    if args.size:
        from core.rays import generate_rays

        H, W = test.hw
        K = test.K[0].clone()
        K[0] *= args.size / W
        K[1] *= args.size / H
        rays_o, rays_d = generate_rays(test.c2w[0], K, args.size, args.size)
        frame = (rays_o.reshape(-1, 3), rays_d.reshape(-1, 3))
    teacher, teacher_note = load_teacher_or_note(Path(args.teacher or run_dir / "teacher" / "teacher.ckpt"))
    bg = torch.tensor(scene.background, dtype=torch.float32)
    batch = args.batch
    with tempfile.TemporaryDirectory() as tmp:
        files = export_all(model, scene, Path(tmp))
        fields = {ORT_VARIANTS[k]: LightField(p, providers=["CPUExecutionProvider"], skip_misses=False)
                  for k, p in files.items()}
        fields.update({f"{ORT_VARIANTS[k]}, {SKIP}": LightField(files[k], providers=["CPUExecutionProvider"])
                       for k in SKIP_VARIANTS})
        runners: dict[str, Callable[[Tensors], np.ndarray]] = {}
        if teacher is not None:
            runners["teacher"] = lambda r: _teacher_rgb(teacher, r, bg)
        runners["PyTorch student fp32"] = lambda r: torch_rgb(model, r[0], r[1], batch).numpy()
        runners["PyTorch student bf16 autocast"] = lambda r: _bf16_rgb(model, r, batch)
        for label, field in fields.items():
            runners[label] = functools.partial(_onnx_rgb, field, batch=batch)
        n_rays = frame[0].shape[0]
        timed: dict[str, Callable[[], Any]] = {k: functools.partial(fn, frame) for k, fn in runners.items()}
        if n_rays <= ONE_CALL_MAX_RAYS:  # a 400 px frame in one call: GBs of lookup temporaries
            timed.update({f"{name} [1 call]": functools.partial(_onnx_rgb, f, frame, batch=n_rays)
                          for name, f in fields.items()})
        ms = time_interleaved(timed, args.repeats)
        psnr = {name: mean_view_psnr(np.stack([fn(v) for v in views]), gt) for name, fn in runners.items()}
    peaks = matmul_peaks(args.repeats)
    meta = next(iter(fields.values())).meta
    assert meta.content_aabb is not None
    n_hit = int(rays_meet_box(frame[0].numpy(), frame[1].numpy(), meta.content_aabb, meta.near,
                              meta.far).sum())
    notes = [student_note, teacher_note, f"{n_hit} of the frame's {n_rays} rays meet the content box"]
    _report(args, ms, psnr, peaks, flops_per_ray(model.cfg), (n_rays, n_hit), trained, notes, model)


Tensors = tuple[torch.Tensor, torch.Tensor]


def _onnx_rgb(field: LightField, rays: Tensors, batch: int) -> np.ndarray:
    return field(rays[0].numpy(), rays[1].numpy(), batch)


@torch.inference_mode()
def _teacher_rgb(teacher: RenderableTeacher, rays: Tensors, bg: torch.Tensor) -> np.ndarray:
    return teacher.render_rays(rays[0], rays[1], bg)["rgb"].float().numpy()


@torch.inference_mode()
def _bf16_rgb(model: R2LStudent, rays: Tensors, batch: int) -> np.ndarray:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return torch_rgb(model, rays[0], rays[1], batch).float().numpy()


def _report(args: argparse.Namespace, ms: dict[str, float], psnr: dict[str, float], peaks: dict[str, float],
            ray_flops: int, n_rays_hit: tuple[int, int], trained: bool, notes: list[str], model: R2LStudent
            ) -> None:
    fp32_peak = peaks["torch fp32 matmul"]
    n_rays, n_hit = n_rays_hit
    onnx_fp32 = ms[ORT_VARIANTS["fp32"]]
    torch_psnr = psnr["PyTorch student fp32"]
    rows: list[list[object]] = []
    for name in psnr:
        t, is_student = ms[name], name != "teacher"
        flops = ray_flops * (n_hit if SKIP in name else n_rays)  # the work done, not the rays shown
        gflops = flops / t / 1e6 if is_student else None
        rows.append([
            name, _fmt(t, ".1f"), _fmt(ms.get(f"{name} [1 call]"), ".1f"),
            _fmt(ms["teacher"] / t, ".1f") if "teacher" in ms else "n/a", _fmt(onnx_fp32 / t, ".2f"),
            _fmt(gflops, ".0f"), _fmt(100 * gflops / fp32_peak if gflops else None, ".0f"),
            _fmt(psnr[name], ".2f") if trained or not is_student else "n/a",
            _fmt(psnr[name] - torch_psnr, "+.3f") if trained and is_student else "n/a",
        ])
    for name, g in peaks.items():
        pct = _fmt(100 * g / fp32_peak, ".0f")
        label = f"({name} 2048^3)" if np.isfinite(g) else f"({name})"
        rows.append([label, "", "", "", "", _fmt(g, ".0f"), pct, "", ""])
    headers = ["model", f"ms/frame (batch {args.batch})", "ms/frame (1 call)", "x teacher", "x ONNX fp32",
               "GFLOP/s", "% fp32 peak", f"PSNR ({args.psnr_views} test views)", "dPSNR vs torch"]
    table = markdown_table(headers, rows)
    print(table)
    onnx_rows = [k for k in psnr if k.startswith("ONNX")]
    fastest = min(onnx_rows, key=lambda k: ms[k])
    close = [k for k in onnx_rows if trained and psnr[k] - torch_psnr >= -0.3]
    fastest_close = min(close, key=lambda k: ms[k]) if close else None
    best_fp32 = f"{ORT_VARIANTS['fp32_fused']}, {SKIP}"
    vs_teacher = (f"{ms['teacher'] / onnx_fp32:.1f}x all rays, {ms['teacher'] / ms[best_fp32]:.1f}x {SKIP}"
                  if "teacher" in ms else "n/a (no teacher)")
    targets = [
        f"ONNX fp32 >= 10x faster than the teacher: {vs_teacher}",
        f"ONNX fp32 >= 60% of the fp32 matmul peak: "
        f"{100 * ray_flops * n_rays / onnx_fp32 / 1e6 / fp32_peak:.0f}%",
        f"fastest variant ({fastest}) >= 3x ONNX fp32: {onnx_fp32 / ms[fastest]:.2f}x, "
        f"dPSNR {_fmt(psnr[fastest] - torch_psnr, '+.3f') if trained else 'n/a'} dB (target >= -0.3)",
    ]
    if fastest_close is not None:
        speed, loss = onnx_fp32 / ms[fastest_close], psnr[fastest_close] - torch_psnr
        targets.append(f"fastest variant within 0.3 dB ({fastest_close}): {speed:.2f}x ONNX fp32, "
                       f"dPSNR {loss:+.3f} dB")
    if "teacher" in ms:
        budget = ms["teacher"] / 10
        max_kflops = budget * fp32_peak / n_hit * 1e3  # ms x GFLOP/s = MFLOP
        targets.append(f"what 10x the teacher asks: {budget:.1f} ms per frame, which even at 100% of the "
                       f"fp32 peak allows {max_kflops:.0f} kFLOP per ray for the {n_hit} rays that meet "
                       f"the box (this student: {ray_flops / 1e3:.0f} kFLOP; teacher PSNR "
                       f"{psnr['teacher']:.2f} dB, student {torch_psnr:.2f} dB)")
    print("\n".join(targets))
    n_side = int(round(n_rays ** 0.5))
    body = (f"One {n_side}x{n_side} frame (test view 0 of the demo scene), best of {args.repeats} "
            f"interleaved runs; student {dataclasses.asdict(model.cfg)}, "
            f"{flops_per_ray(model.cfg) / 1e6:.2f} MFLOP per ray. "
            f"{'; '.join(notes)}.\n\n{table}\n\n" + "\n".join(f"- {t}" for t in targets) + "\n\n" + NOTES)
    size = args.size or n_side
    write_section("inference" if not args.size else f"inference_{size}px", body)
    record = {"size": [n_side, n_side], "rays": n_rays, "rays_meeting_box": n_hit,
              "student": dataclasses.asdict(model.cfg), "trained": trained,
              "teacher": {"ms": ms.get("teacher"), "psnr": psnr.get("teacher")},
              "variants": {k: {"ms": ms[k], "ms_one_call": ms.get(f"{k} [1 call]"), "psnr": psnr[k],
                               "x_teacher": ms["teacher"] / ms[k] if "teacher" in ms else None}
                           for k in psnr if k != "teacher"}}
    out = Path(args.json or Path(__file__).resolve().parent / f"inference_{size}.json")
    write_json(out, record)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
