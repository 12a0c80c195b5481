"""The GPU path in one prepared run: kernel parity, teacher, data generation, students, ONNX Runtime, NCCL.

``scripts/gpu_check.sh OUT_DIR`` installs what the machine lacks and runs this module. Every part is
wrapped: a failure becomes a row with status ``error`` and the next part still runs. One markdown table
is printed at the end and written, with every measured number, to ``OUT_DIR/gpu_check.json``.

    python -m benchmarks.gpu_check --out OUT_DIR [--allow-cpu] [--teacher-seconds 60] [--student-seconds 60]
        [--n-views 100] [--max-views N] [--parts kernel,teacher,data_gen,student,onnx,nccl,image_student]

Without CUDA it stops with one ``error:`` line (exit 1) unless ``--allow-cpu`` is given: then it runs the
CPU-runnable parts instead (the CPU kernel against the reference, the stages on ``device=cpu`` with tiny
budgets, the ONNX CPU provider, the equivalence test on gloo). Statuses: ``pass`` / ``FAIL`` against a
target, ``ran`` for a measurement without a target (CPU runs: no GPU figure is claimed), ``skipped`` with
the reason, ``error`` with the exception's first line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cuda.hashgrid_ref import HashGridSpec

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
PARTS = ("kernel", "teacher", "data_gen", "student", "onnx", "nccl", "image_student")
NO_CUDA = "error: no CUDA GPU: torch.cuda.is_available() is False (this check needs one NVIDIA GPU; " \
          "--allow-cpu runs the CPU parts)"
FWD_TOL, GRAD_TOL, ONNX_TOL, TEACHER_DB = 1e-5, 1e-4, 1e-4, 30.0
EQUIVALENCE_TEST = ("tests/test_distributed_partitioned.py::"
                    "test_distributed_render_and_gradients_equal_single_process[2]")
HEADERS = ["part", "check", "result", "target", "status", "seconds"]


def kernel_specs() -> dict[str, HashGridSpec]:
    """Every grid shape ``tests/test_hashgrid_kernels.py`` checks (its ``SPECS``; a test keeps them equal)."""
    from cuda.backend import HashGridConfig

    return {"small": HashGridSpec(n_levels=8, n_features=2, log2_hashmap_size=10, base_resolution=3,
                                  max_resolution=96),
            "default": HashGridConfig().spec(),
            "f4": HashGridSpec(n_levels=4, n_features=4, log2_hashmap_size=8, base_resolution=2,
                               max_resolution=32)}


class Table:
    """The rows of the run; :meth:`part` runs one part and turns an exception into an ``error`` row."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, part: str, check: str, result: str, target: str, status: str, seconds: float,
            **data: Any) -> None:
        self.rows.append({"part": part, "check": check, "result": result, "target": target, "status": status,
                          "seconds": round(seconds, 2), "data": data})

    def part(self, name: str, fn: Callable[..., None], *args: Any) -> None:
        start = time.perf_counter()
        try:
            fn(self, *args)
        except Exception as exc:  # noqa: BLE001 - every failure is a row; the other parts still run
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            log.exception("part %s failed", name)
            self.add(name, "(the part)", f"{type(exc).__name__}: {first}", "", "error",
                     time.perf_counter() - start)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        for row in self.rows:
            lines.append("| " + " | ".join(str(row[h]).replace("|", "/") for h in HEADERS) + " |")
        return "\n".join(lines)


def _verdict(ok: bool, gpu: bool) -> str:
    return ("pass" if ok else "FAIL") if gpu else ("ran" if ok else "FAIL")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative error of ``a`` against the reference ``b``."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _encode_with_grads(fn: Callable[..., torch.Tensor], x: torch.Tensor, params: torch.Tensor,
                       spec: HashGridSpec, cotangent: torch.Tensor) -> tuple[torch.Tensor, ...]:
    xg, pg = x.clone().requires_grad_(), params.clone().requires_grad_()
    out = fn(xg, pg, spec)
    grad_x, grad_params = torch.autograd.grad(out, [xg, pg], cotangent)
    return out.detach(), grad_params, grad_x


def points_per_second(fn: Callable[..., torch.Tensor], x: torch.Tensor, params: torch.Tensor,
                      spec: HashGridSpec, repeats: int = 5) -> float:
    """Forward points per second, best of ``repeats`` after one warm-up call."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    best = float("inf")
    with torch.no_grad():
        for i in range(repeats + 1):
            sync()
            start = time.perf_counter()
            fn(x, params, spec)
            sync()
            if i:
                best = min(best, time.perf_counter() - start)
    return x.shape[0] / best


def check_kernel(table: Table, args: argparse.Namespace) -> None:
    """Our kernel (CUDA, else the CPU one) against the torch reference and the CPU kernel: every spec."""
    from cuda.build import load_hashgrid_extension
    from cuda.hashgrid import hash_encode
    from cuda.hashgrid_ref import hash_encode_ref

    device = torch.device("cuda" if args.gpu else "cpu")
    for with_cuda in sorted({False, args.gpu}):
        start = time.perf_counter()
        load_hashgrid_extension(with_cuda=with_cuda)
        table.add("kernel", f"JIT build ({'CUDA' if with_cuda else 'CPU'})", "built", "builds", "pass",
                  time.perf_counter() - start)
    gen = torch.Generator().manual_seed(0)
    n, n_speed = (2**16, 2**20) if args.gpu else (4096, 2**14)
    for name, spec in kernel_specs().items():
        start = time.perf_counter()
        x = torch.rand(n, 3, generator=gen)
        params = torch.empty(spec.n_params).uniform_(-1.0, 1.0, generator=gen)
        cot = torch.randn(n, spec.n_output_dims, generator=gen)
        xd, pd, cd = (t.to(device) for t in (x, params, cot))
        ref = _encode_with_grads(hash_encode_ref, xd, pd, spec, cd)
        ours = _encode_with_grads(hash_encode, xd, pd, spec, cd)
        errs = {"fwd": rel_err(ours[0], ref[0]), "d_params": rel_err(ours[1], ref[1]),
                "d_x": rel_err(ours[2], ref[2])}
        if args.gpu:  # the CUDA kernel against the CPU one too
            cpu = _encode_with_grads(hash_encode, x, params, spec, cot)
            names = ("fwd_vs_cpu", "d_params_vs_cpu", "d_x_vs_cpu")
            errs.update({k: rel_err(a, b) for k, a, b in zip(names, ours, cpu)})
        ok = all(v <= (FWD_TOL if k.startswith("fwd") else GRAD_TOL) for k, v in errs.items())
        xs = torch.rand(n_speed, 3, generator=gen).to(device)
        speed = {"kernel_pts_s": points_per_second(hash_encode, xs, pd, spec),
                 "torch_pts_s": points_per_second(hash_encode_ref, xs, pd, spec)}
        result = ", ".join(f"{k} {v:.1e}" for k, v in errs.items())
        result += f"; {speed['kernel_pts_s'] / 1e6:.1f} M pts/s (torch {speed['torch_pts_s'] / 1e6:.1f})"
        shape = f"{name} {spec.n_levels}x{spec.n_features}, 2^{spec.log2_hashmap_size}"
        table.add("kernel", f"{device.type} kernel vs reference: {shape}, {n} pts", result,
                  f"fwd <= {FWD_TOL:g}, grads <= {GRAD_TOL:g}", "pass" if ok else "FAIL",
                  time.perf_counter() - start, **errs, **speed, n_points=n)


def _config(stage: str, overrides: list[str]) -> Any:
    from pipeline.config import to_dataclass
    from testing.stages import compose, stage_schema

    return to_dataclass(compose(stage, overrides), stage_schema(stage))


def _run_section(args: argparse.Namespace) -> list[str]:
    """The overrides every stage gets: the profile (GPU) or the CPU, the run folder, a view cap."""
    common = [f"run_dir={args.out / 'run'}", "profile=gpu" if args.gpu else "device=cpu"]
    return common + ([f"scene.max_views={args.max_views}"] if args.max_views else [])


def check_teacher(table: Table, args: argparse.Namespace) -> None:
    from teacher.train import run

    start = time.perf_counter()
    cfg = _config("teacher", [*_run_section(args), f"train.max_seconds={args.teacher_seconds}",
                              "train.progress_bar=false", "eval.progress_bar=false", "eval.n_renders=1"])
    m = run(cfg)
    psnr = float(m["test"]["psnr"])
    table.add("teacher", f"demo scene, {cfg.device}, {args.teacher_seconds:g} s ({m['backend']} backend)",
              f"{m['steps_per_second']:.1f} steps/s, test PSNR {psnr:.2f} dB", f">= {TEACHER_DB:g} dB",
              _verdict(psnr >= TEACHER_DB or not args.gpu, args.gpu), time.perf_counter() - start,
              psnr=psnr, steps=m["steps"], steps_per_second=m["steps_per_second"], backend=m["backend"])


def check_data_gen(table: Table, args: argparse.Namespace) -> None:
    from data_gen.render import run

    start = time.perf_counter()
    per_shard = max(1, args.n_views // 4)
    counts = [f"n_views={args.n_views}", f"views_per_shard={per_shard}"]  # a forward-facing scene's too
    m = run(_config("data_gen", [*_run_section(args), *counts, *(f"forward.{c}" for c in counts),
                                 "progress=false"]))
    table.add("data_gen", f"{m['n_views']} pseudo-views in {m['n_shards']} shards",
              f"{m['views_per_s']:.1f} views/s, {m['rays_per_s'] / 1e6:.2f} M rays/s", "completes",
              _verdict(bool(m["complete"]), args.gpu), time.perf_counter() - start,
              views_per_s=m["views_per_s"], rays_per_s=m["rays_per_s"])


def check_student(table: Table, args: argparse.Namespace) -> None:
    from student.train import run

    start = time.perf_counter()
    tiny = [] if args.gpu else ["model.depth=4", "model.width=32", "model.n_points=8", "train.num_workers=0",
                                "train.distill.batch_size=512", "eval.max_views=2", "eval.val_views=1"]
    own = ["train.precision=bf16", "train.finetune.enabled=false", "train.progress_bar=false",
           f"train.distill.max_seconds={args.student_seconds}", "train.distill.val_every_steps=100000",
           "eval.save_renders=false"]
    cfg = _config("student", [*_run_section(args), *tiny, *own])
    m = run(cfg)
    distill = m["stages"]["distill"]
    psnr = float(m["test"]["psnr"])
    design = f"{cfg.model.encoding}, {cfg.model.depth}x{cfg.model.width}, K={cfg.model.n_points}"
    table.add("student", f"distill {args.student_seconds:g} s, bf16, {design}",
              f"{distill['rays_per_second'] / 1e3:.1f} k rays/s, {distill['steps']} steps, "
              f"test PSNR {psnr:.2f} dB", "trains in bf16", _verdict(psnr == psnr, args.gpu),
              time.perf_counter() - start, psnr=psnr, rays_per_second=distill["rays_per_second"],
              steps=distill["steps"], precision=m["precision"])


def check_image_student(table: Table, args: argparse.Namespace) -> None:
    """The image student (the CPU profile's shape) distilled for the student's seconds on the same teacher
    and pseudo-views, in its own run folder: its steps/s and test PSNR on this device, the figures beside
    its CPU budget curve (``benchmarks/RESULTS.md``, section ``image_student_budget``)."""
    from student.train import run

    start = time.perf_counter()
    run_dir = args.out / "image_run"
    run_dir.mkdir(parents=True, exist_ok=True)
    for part in ("teacher", "pseudo"):  # the student part's teacher and pseudo-views
        link = run_dir / part
        if not link.exists():
            link.symlink_to((args.out / "run" / part).resolve(), target_is_directory=True)
    cpu = _config("student", ["profile=cpu"]).model.image  # the shape measured on the CPU, on any device
    shape: dict[str, object] = {"scale": cpu.scale, "n_points": cpu.n_points, "resolutions": cpu.resolutions}
    if not args.gpu:
        shape.update(width=16, n_points=4, resolutions=[16])
    tiny = [] if args.gpu else ["eval.max_views=2", "eval.val_views=1"]
    own = ["model.decoder=image", "model.encoding=planes", "train.precision=bf16",
           "train.finetune.enabled=false", "train.progress_bar=false",
           f"train.distill.max_seconds={args.student_seconds}", "train.distill.val_every_steps=100000",
           "eval.save_renders=false"]
    section = [f"run_dir={run_dir}" if a.startswith("run_dir=") else a for a in _run_section(args)]
    image_shape = [f"model.image.{k}={v}".replace(" ", "") for k, v in shape.items()]
    cfg = _config("student", [*section, *image_shape, *tiny, *own])
    m = run(cfg)
    distill = m["stages"]["distill"]
    psnr = float(m["test"]["psnr"])
    image = cfg.model.image
    design = f"scale {image.scale}, K={image.n_points}, planes {list(image.resolutions)} x {image.channels}"
    table.add("image_student", f"distill {args.student_seconds:g} s, bf16, {design}",
              f"{distill['steps_per_second']:.1f} steps/s, {distill['steps']} steps, test PSNR {psnr:.2f} dB",
              "trains", _verdict(psnr == psnr, args.gpu), time.perf_counter() - start, psnr=psnr,
              steps=distill["steps"], steps_per_second=distill["steps_per_second"], precision=m["precision"])


def check_onnx(table: Table, args: argparse.Namespace) -> None:
    """Export fp32, then time a 400x400 frame per provider and compare it with PyTorch on the same rays."""
    import numpy as np
    import onnxruntime as ort

    from export.onnx import run
    from export.parity import torch_rgb
    from export.runtime import LightField
    from export.runtime.cameras import rays_from_camera
    from scenes.load import load_scene
    from student.checkpoint import load_student

    start = time.perf_counter()
    run_section = [a for a in _run_section(args) if not a.startswith(("profile=", "device="))]
    cfg = _config("export", [*run_section, "variants=[fp32]", "static_variants=[]", "fused_encoding=[]",
                             "parity.max_test_views=1"])
    report = run(cfg)
    err = float(report["parity"]["fp32_max_abs_err"])
    table.add("onnx", "export fp32, parity gate (random rays + 1 test view)", f"max abs err {err:.1e}",
              f"<= {ONNX_TOL:g}", "pass" if err <= ONNX_TOL else "FAIL", time.perf_counter() - start, err=err)
    path = Path(cfg.run_dir) / "export" / "student.onnx"
    model, _ = load_student(Path(cfg.run_dir) / "student" / "student.ckpt")
    c2w = load_scene(cfg.scene, splits=("test",)).split("test").c2w[0].numpy()
    available = ort.get_available_providers()
    for provider in ("CPUExecutionProvider", "CUDAExecutionProvider"):
        if provider not in available:
            table.add("onnx", f"{provider}, 400x400 frame", f"not in this build ({', '.join(available)})",
                      "", "skipped", 0.0)
            continue
        start = time.perf_counter()
        field = LightField(path, providers=[provider])
        K = np.asarray(field.meta.K, dtype=np.float32) * np.array(  # as LightField.render scales it
            [[400 / field.image_size[1]], [400 / field.image_size[0]], [1.0]], dtype=np.float32)
        frame, ms = _frame_ms(field, c2w, repeats=3 if args.gpu else 1)
        rays_o, rays_d = rays_from_camera(c2w, K, 400, 400)
        ref = torch_rgb(model, torch.from_numpy(rays_o), torch.from_numpy(rays_d)).numpy()
        ref = ref.reshape(400, 400, 3)
        diff = float(np.abs(frame - ref).max())
        table.add("onnx", f"{provider}, 400x400 frame vs PyTorch",
                  f"{ms:.1f} ms/frame, max abs err {diff:.1e}", f"<= {ONNX_TOL:g}",
                  "pass" if diff <= ONNX_TOL else "FAIL", time.perf_counter() - start,
                  ms_per_frame=ms, err=diff)


def _frame_ms(field: Any, c2w: Any, repeats: int) -> tuple[Any, float]:
    """A 400x400 frame and the best of ``repeats`` timed renders (after a warm-up one when ``repeats`` > 1:
    on the CPU the single render is the timing, 5 s each)."""
    frame = field.render(c2w, image_size=(400, 400)) if repeats > 1 else None
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        frame = field.render(c2w, image_size=(400, 400))
        best = min(best, time.perf_counter() - t0)
    return frame, best * 1e3


def _nccl_worker(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist

    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        t = torch.full((4,), float(rank + 1), device="cuda:0")
        dist.all_reduce(t)
        torch.cuda.synchronize()
        if float(t[0]) != world * (world + 1) / 2:
            raise RuntimeError(f"all_reduce gave {float(t[0])}")
    finally:
        dist.destroy_process_group()


def check_nccl(table: Table, args: argparse.Namespace) -> None:
    """NCCL with 2 processes on the one GPU (NCCL may refuse two ranks on one device), then the NeRF-XL
    equivalence test (2 gloo processes against one process) run by pytest."""
    import torch.multiprocessing as mp

    from pipeline.run import free_port

    start = time.perf_counter()
    if not args.gpu:
        table.add("nccl", "2 NCCL ranks on one GPU (all_reduce)", "no CUDA", "", "skipped", 0.0)
    else:
        try:
            mp.spawn(_nccl_worker, args=(2, free_port()), nprocs=2, join=True)
            table.add("nccl", "2 NCCL ranks on one GPU (all_reduce)", "ok", "works", "pass",
                      time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - recorded; the gloo check below still runs
            first = (str(exc).strip().splitlines() or [""])[-1][:200]
            table.add("nccl", "2 NCCL ranks on one GPU (all_reduce)", f"refused: {first}",
                      "works (else gloo)", "FAIL", time.perf_counter() - start)
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", EQUIVALENCE_TEST]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    table.add("nccl", "NeRF-XL equivalence, 2 gloo processes vs 1 (pytest)", last, "passes",
              "pass" if proc.returncode == 0 else "FAIL", time.perf_counter() - start,
              returncode=proc.returncode)


CHECKS: dict[str, Callable[[Table, argparse.Namespace], None]] = {
    "kernel": check_kernel, "teacher": check_teacher, "data_gen": check_data_gen, "student": check_student,
    "onnx": check_onnx, "image_student": check_image_student, "nccl": check_nccl}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (gpu_check.json, run/)")
    p.add_argument("--allow-cpu", action="store_true", help="without CUDA: run the CPU parts instead")
    p.add_argument("--teacher-seconds", type=float, default=None, help="default 60 (GPU), 5 (CPU)")
    p.add_argument("--student-seconds", type=float, default=None, help="default 60 (GPU), 5 (CPU)")
    p.add_argument("--n-views", type=int, default=None, help="pseudo-views; default 200 (GPU), 4 (CPU)")
    p.add_argument("--max-views", type=int, default=None, help="scene.max_views (default: all; CPU: 4)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    args = p.parse_args(argv)
    args.parts = [s for s in args.parts.split(",") if s]
    unknown = [s for s in args.parts if s not in CHECKS]
    if unknown:
        p.error(f"--parts: unknown {unknown}; choose from {list(PARTS)}")
    return args


def _write(out: Path, report: dict[str, Any]) -> None:
    tmp = out / "gpu_check.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(tmp, out / "gpu_check.json")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.gpu = torch.cuda.is_available()
    if not args.gpu and not args.allow_cpu:
        print(NO_CUDA, file=sys.stderr)
        return 1
    cpu_defaults = {"teacher_seconds": 5.0, "student_seconds": 5.0, "n_views": 4, "max_views": 4}
    gpu_defaults = {"teacher_seconds": 60.0, "student_seconds": 60.0, "n_views": 200, "max_views": None}
    for key, value in (gpu_defaults if args.gpu else cpu_defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(0) if args.gpu else "CPU only (--allow-cpu: no GPU figure)"
    table, start = Table(), time.perf_counter()
    report = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda, "gpu": args.gpu,
              "parts": args.parts, "budgets": {k: getattr(args, k) for k in cpu_defaults}, "complete": False}
    for name in args.parts:
        print(f"gpu_check: {name} ...", flush=True)
        table.part(name, CHECKS[name], args)
        # written after every part: a run stopped by the script's time limit still leaves its rows
        elapsed = round(time.perf_counter() - start, 1)
        _write(args.out, {**report, "rows": table.rows, "total_seconds": elapsed})
    total = time.perf_counter() - start
    _write(args.out, {**report, "rows": table.rows, "total_seconds": round(total, 1), "complete": True})
    print(f"\n## gpu_check on {device} (torch {torch.__version__}, CUDA {torch.version.cuda})\n")
    print(table.markdown())
    print(f"\ntotal {total:.0f} s; JSON: {args.out / 'gpu_check.json'}")
    return 0 if all(r["status"] in ("pass", "ran", "skipped") for r in table.rows) else 2


if __name__ == "__main__":
    sys.exit(main())
