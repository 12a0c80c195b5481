"""Speed of the exported image student (issue 24): one frame drawn by ``LightField.render`` per precision,
against the teacher on the same rays.

For a run folder with an exported image student (``python -m export.onnx run_dir=<run-dir>``), each size of
``--sizes`` times one frame of the scene's test view 0 (its pose; its intrinsics scaled to the size, same
field of view): the teacher rendering that frame's rays in PyTorch (as :mod:`benchmarks.inference` does),
and ``LightField.render(c2w, K)`` of the size's exported file in each precision (fp32, fp16, int8: one
session call per frame; ONNX Runtime's CPU provider, 2 intra-op threads, the runtime's default session
options: its worker threads spin between the ops of a call). Rounds interleave every row of a size, with a
pause before each timed call so that the previous row's spinning threads are idle; each row is the best of
``--repeats`` after a warm-up. An ONNX fp32 MatMul 2048^3 reference row (``device_student.matmul_ref``),
timed in the first size's rounds, lets the table be read on another CPU.

Columns: ms per frame, speed-up over the teacher and over fp32 of the same size, PSNR of the frame against
fp32's frame of the same size, and at the training size the test PSNR over ``--psnr-views`` test views
against the photos (and its change from fp32's), file size. A size without an exported file is a row
saying so, with the export command that writes it. The issue's targets follow the table; the notes give
the machine's 1-minute load average at the start and the end (a shared machine's timings swing with it).

    python -m benchmarks.image_inference [--run-dir runs/mic_img] [--sizes 100,400] [--repeats 7]
        [--psnr-views 8] [--scene PATH] [--teacher PATH] [--json PATH] [--no-write]

Prints one table and writes the ``image_inference`` section of ``benchmarks/RESULTS.md`` and a JSON file
(``--json``, default ``benchmarks/image_inference.json``); ``--no-write`` prints only (a loaded machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.device_student import matmul_ref
from benchmarks.inference import _fmt, _teacher_rgb, load_teacher_or_note, time_interleaved
from benchmarks.results import markdown_table, write_section
from core.io import write_json
from core.rays import generate_rays
from export.parity import mean_view_psnr, psnr_np, view_rays
from export.runtime import LightField, scaled_intrinsics
from export.variants import variant_filename
from scenes.load import SceneConfig, SceneSplit, load_scene
from teacher.protocol import RenderableTeacher

log = logging.getLogger(__name__)
Size = tuple[int, int]  # (H, W)
PRECISIONS = ("fp32", "fp16", "int8")
THREADS = 2
PAUSE_S = 0.05  # before each timed call: another session's threads spin a while after its call
DEFAULT_JSON = Path(__file__).resolve().parent / "image_inference.json"
MAX_DROP_DB = 0.3  # "within 0.3 dB of fp32": test PSNR at the training size
TARGET_MS = {(400, 400): 40.0, (100, 100): 5.0}  # fp32 frame budgets of issue 24
TARGET_X_TEACHER = ((400, 400), 10.0)
NOTES = (
    "ms: best of the repeats after a warm-up, one frame per call, rounds interleaved over the rows of a "
    "size; the teacher renders the frame's rays in PyTorch (torch on 2 threads), the student rows are "
    "`export.runtime.LightField.render(c2w, K)` (one ONNX Runtime session call: CPU provider, 2 intra-op "
    "threads, the runtime's default options: threads spin between ops; optimisation ALL; 50 ms of sleep "
    "before each timed call, so that no other row's threads spin beside it). x teacher / x fp32: the "
    "teacher's / the fp32 file's ms of the same size over the row's. PSNR vs fp32: the timed frame against "
    "the fp32 file's frame of the same size. "
    "Test PSNR: the training-size files (and the teacher) over the first test views against the photos; a "
    "precision within 0.3 dB of fp32 there counts as within 0.3 dB at every size (as export's int8 gate)."
)


@dataclasses.dataclass
class Row:
    """One row of the table: the teacher or one exported file at one size."""

    size: Size
    model: str  # "teacher" or a precision
    file: str | None = None
    mb: float | None = None
    ms: float | None = None
    x_teacher: float | None = None
    x_fp32: float | None = None
    psnr_vs_fp32: float | None = None
    test_psnr: float | None = None


def parse_sizes(text: str) -> list[Size]:
    """``"100,400"`` or ``"100x100,300x400"`` (``H x W``) -> ``[(100, 100), (400, 400)]``."""
    sizes = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:x(\d+))?\s*", item)
        if match is None or int(match[1]) < 1 or int(match[2] or match[1]) < 1:
            raise argparse.ArgumentTypeError(f"--sizes: {item!r} is not N or HxW (positive integers)")
        sizes.append((int(match[1]), int(match[2] or match[1])))
    return list(dict.fromkeys(sizes))


def export_command(run_dir: Path, sizes: Sequence[Size]) -> str:
    """The export command that writes the files of ``sizes`` (besides the training size's)."""
    pairs = ",".join(f"[{H},{W}]" for H, W in sizes)
    return f"python -m export.onnx run_dir={run_dir}" + (f" 'image_sizes=[{pairs}]'" if pairs else "")


def find_files(export_dir: Path, train_hw: Size, sizes: Sequence[Size]) -> dict[Size, dict[str, Path]]:
    """``{size: {precision: path}}`` of the exported files of ``sizes``; a size without any file is left
    out (the export's file names: :func:`export.variants.variant_filename`)."""
    found: dict[Size, dict[str, Path]] = {}
    for size in sizes:
        names = {p: variant_filename(p, False, None if size == train_hw else size) for p in PRECISIONS}
        paths = {p: export_dir / name for p, name in names.items() if (export_dir / name).is_file()}
        if paths:
            found[size] = paths
    return found


def exported_sizes(export_dir: Path) -> list[Size]:
    """The extra output sizes that ``export_dir`` holds files of (``student_<H>x<W>.onnx``)."""
    matches = (re.fullmatch(r"student_(\d+)x(\d+)\.onnx", p.name) for p in sorted(export_dir.glob("*.onnx")))
    return [(int(m[1]), int(m[2])) for m in matches if m]


def open_field(path: Path) -> LightField:
    """An exported file in a session with the benchmarks' CPU settings."""
    return LightField(path, providers=["CPUExecutionProvider"], threads=THREADS)


def frame_camera(test: SceneSplit, size: Size) -> tuple[np.ndarray, np.ndarray]:
    """``c2w [4, 4]``, ``K [3, 3]`` of test view 0, ``K`` scaled to ``size`` (same field of view)."""
    return test.c2w[0].numpy(), scaled_intrinsics(test.K[0].numpy(), test.hw, size)


def time_size(size: Size, paths: dict[str, Path], test: SceneSplit, teacher: RenderableTeacher | None,
              bg: torch.Tensor, repeats: int, extra: Callable[[], Any] | None
              ) -> tuple[list[Row], float | None]:
    """The rows of one size (timed in interleaved rounds with ``extra``, the reference) and ``extra``'s ms."""
    c2w, K = frame_camera(test, size)
    fields = {p: open_field(path) for p, path in paths.items()}
    runners: dict[str, Callable[[], Any]] = {}
    if teacher is not None:
        rays = generate_rays(torch.from_numpy(c2w), torch.from_numpy(K), *size)
        runners["teacher"] = functools.partial(_teacher_rgb, teacher, rays, bg)
    runners.update({p: functools.partial(f.render, c2w, K) for p, f in fields.items()})
    if extra is not None:
        runners["reference"] = extra
    ms = time_interleaved(runners, repeats, PAUSE_S)
    images = {p: f.render(c2w, K) for p, f in fields.items()}
    rows = [Row(size, "teacher", ms=ms["teacher"], x_teacher=1.0)] if teacher is not None else []
    for p, path in paths.items():
        rows.append(Row(size, p, path.name, path.stat().st_size / 1e6, ms[p],
                        ms["teacher"] / ms[p] if teacher is not None else None,
                        ms["fp32"] / ms[p] if "fp32" in ms else None,
                        psnr_np(images[p], images["fp32"]) if "fp32" in images and p != "fp32" else None))
    log.info("%dx%d: %s", *size, {k: round(v, 1) for k, v in ms.items()})
    return rows, ms.get("reference")


def view_psnrs(paths: dict[str, Path], test: SceneSplit, n_views: int, teacher: RenderableTeacher | None,
               bg: torch.Tensor) -> dict[str, float]:
    """Mean test PSNR over the first ``n_views`` test views of each training-size file and the teacher."""
    n = min(n_views, test.n_views)
    gt = test.rgb(bg)[:n].numpy()  # [V, H, W, 3]
    out = {}
    if teacher is not None:
        frames = [_teacher_rgb(teacher, rays, bg) for rays in view_rays(test, n)]
        out["teacher"] = mean_view_psnr(np.stack(frames), gt.reshape(n, -1, 3))
    for p, path in paths.items():
        field = open_field(path)
        frames = [field.render(test.c2w[i].numpy(), test.K[i].numpy()) for i in range(n)]
        out[p] = mean_view_psnr(np.stack(frames), gt)
    return out


def within_drop(test_psnr: dict[str, float]) -> list[str]:
    """The precisions whose test PSNR is at most :data:`MAX_DROP_DB` below fp32's (fp32 among them)."""
    if "fp32" not in test_psnr:
        return []
    return [p for p in PRECISIONS if p in test_psnr and test_psnr["fp32"] - test_psnr[p] <= MAX_DROP_DB]


def targets(rows: list[Row], close: list[str], missing: dict[Size, str]) -> list[str]:
    """Issue 24's targets, one line each, from the table's rows."""
    by = {(r.size, r.model): r for r in rows}
    out = []
    for size, budget in TARGET_MS.items():
        r, name = by.get((size, "fp32")), f"{size[0]}x{size[1]} fp32"
        if r is None or r.ms is None:
            timed = any(x.size == size for x in rows)
            out.append(f"{name}: {missing.get(size) or ('no fp32 file' if timed else 'not in --sizes')}")
            continue
        out.append(f"{name} <= {budget:g} ms: {r.ms:.1f} ms ({'met' if r.ms <= budget else 'missed'})")
        if size == TARGET_X_TEACHER[0]:
            factor, x = TARGET_X_TEACHER[1], r.x_teacher
            verdict = "n/a (no teacher)" if x is None else f"{x:.1f}x ({'met' if x >= factor else 'missed'})"
            out.append(f"{name} >= {factor:g}x faster than the teacher: {verdict}")
    for size in dict.fromkeys(r.size for r in rows):
        name = f"fastest variant within {MAX_DROP_DB} dB of fp32 at {size[0]}x{size[1]}"
        cands = [by[size, p] for p in close if (size, p) in by]
        if not cands:
            out.append(f"{name}: n/a (no test PSNR of fp32 at the training size)")
            continue
        best = min(cands, key=lambda r: r.ms or float("inf"))
        out.append(f"{name}: {best.model}, {_fmt(best.ms, '.1f')} ms, {_fmt(best.x_fp32, '.2f')}x fp32, "
                   f"{_fmt(best.x_teacher, '.1f')}x the teacher")
    return out


def table(rows: list[Row], missing: dict[Size, str], reference: tuple[float, float], n_views: int) -> str:
    """The markdown table: the rows, a row per missing size, the reference row (``(ms, GFLOP/s)``) last."""
    fp32_test = {r.size: r.test_psnr for r in rows if r.model == "fp32"}
    body: list[list[object]] = []
    for r in rows:
        base = fp32_test.get(r.size)
        drop = None if r.test_psnr is None or base is None or r.model == "fp32" else r.test_psnr - base
        body.append([f"{r.size[0]}x{r.size[1]}", r.model, r.file or "PyTorch", _fmt(r.mb, ".2f"),
                     _fmt(r.ms, ".1f"), _fmt(r.x_teacher, ".1f"), _fmt(r.x_fp32, ".2f"),
                     _fmt(r.psnr_vs_fp32, ".1f"), _fmt(r.test_psnr, ".2f"), _fmt(drop, "+.3f")])
    for (H, W), why in missing.items():
        body.append([f"{H}x{W}", "-", why, "", "", "", "", "", "", ""])
    body.append(["-", "(reference: ONNX fp32 MatMul 2048^3)", f"{reference[1]:.0f} GFLOP/s", "",
                 f"{reference[0]:.1f}", "", "", "", "", ""])
    headers = ["size", "model", "file", "MB", "ms/frame", "x teacher", "x fp32", "PSNR vs fp32 (frame)",
               f"test PSNR ({n_views} views)", "dPSNR vs fp32 (test)"]
    return markdown_table(headers, body)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/mic_img"))
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("100,400"),
                        help="frame sizes, N or HxW, comma-separated (each needs its exported file)")
    parser.add_argument("--repeats", type=int, default=7, help="timed frames per row, after a warm-up")
    parser.add_argument("--psnr-views", type=int, default=8, help="test views for the test PSNR (0: none)")
    parser.add_argument("--scene", default=None, help="scene folder (default: the embedded demo)")
    parser.add_argument("--teacher", type=Path, default=None, help="default: <run-dir>/teacher/teacher.ckpt")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--no-write", action="store_true", help="print only: no RESULTS.md section, no JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.psnr_views < 0:
        parser.error("--repeats must be >= 1 and --psnr-views >= 0")
    return args


def check_export(run_dir: Path, scene_name: str) -> Size:
    """The training image size of ``run_dir``'s exported image student; exits with one line when there is
    none, or it is a ray model, or it is of another scene."""
    base = run_dir / "export" / variant_filename("fp32", False)
    if not base.is_file():
        raise SystemExit(f"error: no {base}: export the image student first: {export_command(run_dir, [])}")
    meta = open_field(base).meta
    if meta.decoder != "image":
        raise SystemExit(f"error: {base} is a ray model: time it with python -m benchmarks.inference")
    if meta.scene_name != scene_name:
        raise SystemExit(f"error: {base} is a student of scene {meta.scene_name}, not of {scene_name} "
                         "(set --scene)")
    return int(meta.image_size[0]), int(meta.image_size[1])


def missing_notes(run_dir: Path, found: dict[Size, dict[str, Path]], sizes: list[Size], train_hw: Size
                  ) -> tuple[dict[Size, str], list[str]]:
    """``{size: why}`` of the sizes without a file (with the export command that writes them, and keeps the
    folder's other sizes: an export replaces every file), and a note per precision missing at a size."""
    export_dir = run_dir / "export"
    extra = [s for s in dict.fromkeys([*exported_sizes(export_dir), *sizes]) if s != train_hw]
    missing = {s: f"no exported file: `{export_command(run_dir, extra)}`" for s in sizes if s not in found}
    notes = [f"{H}x{W}: no {variant_filename(p, False, None if (H, W) == train_hw else (H, W))} "
             "(int8: see export.json's int8_gate)"
             for (H, W), paths in found.items() for p in PRECISIONS if p not in paths]
    return missing, notes


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the JSON record (also written, with the RESULTS.md section)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(THREADS)
    load_start = os.getloadavg()[0]  # the machine is shared: the note says how busy it was
    scene = load_scene(SceneConfig(path=args.scene), splits=("test",))
    test, export_dir = scene.split("test"), args.run_dir / "export"
    train_hw = check_export(args.run_dir, scene.name)
    teacher, teacher_note = load_teacher_or_note(args.teacher or args.run_dir / "teacher" / "teacher.ckpt")
    bg = torch.tensor(scene.background, dtype=torch.float32)
    found = find_files(export_dir, train_hw, args.sizes)
    missing, notes = missing_notes(args.run_dir, found, args.sizes, train_hw)
    notes.insert(0, teacher_note)
    ref_rec, ref_fn = matmul_ref()
    rows: list[Row] = []
    ref_ms = None
    for size, paths in found.items():  # the reference in the first size's rounds
        size_rows, ms = time_size(size, paths, test, teacher, bg, args.repeats,
                                  ref_fn if ref_ms is None else None)
        rows, ref_ms = rows + size_rows, ref_ms or ms
    if ref_ms is None:
        ref_ms = time_interleaved({"reference": ref_fn}, args.repeats, PAUSE_S)["reference"]
    n_views = min(args.psnr_views, test.n_views) if test.hw == train_hw else 0
    test_psnr: dict[str, float] = {}
    if n_views:
        paths = find_files(export_dir, train_hw, [train_hw]).get(train_hw, {})
        test_psnr = view_psnrs(paths, test, n_views, teacher, bg)
        psnrs = ", ".join(f"{k} {v:.2f} dB" for k, v in test_psnr.items())
        notes.append(f"test PSNR over {n_views} test views at the training size {train_hw}: {psnrs}")
    elif args.psnr_views:
        notes.append(f"no test PSNR: the test photos are {test.hw}, the training size {train_hw}")
    for r in rows:
        r.test_psnr = test_psnr.get(r.model) if r.size == train_hw else None
    reference = (ref_ms, ref_rec["gflop"] / ref_ms * 1e3)
    text = table(rows, missing, reference, n_views)
    goals = targets(rows, within_drop(test_psnr), missing)
    notes.append(f"1-minute load average {load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end "
                 f"({os.cpu_count()} CPUs)")
    print("\n".join([text, *goals, *notes]))
    record = {"run_dir": str(args.run_dir), "scene": scene.name, "train_size": list(train_hw),
              "repeats": args.repeats, "psnr_views": n_views,
              "rows": [{**dataclasses.asdict(r), "size": list(r.size)} for r in rows],
              "missing": {f"{H}x{W}": why for (H, W), why in missing.items()}, "test_psnr": test_psnr,
              "reference": {"ms": reference[0], "gflop_s": reference[1]}, "targets": goals,
              "notes": [*notes, f"ONNX Runtime {ort.__version__}, torch {torch.__version__}"]}
    if not args.no_write:
        write(record, text, " ".join(["python -m benchmarks.image_inference", *argv]), args.json)
    return record


def write(record: dict[str, Any], text: str, command: str, json_path: Path) -> None:
    """The ``image_inference`` section of RESULTS.md and the JSON record."""
    intro = (f"One frame of test view 0 of scene {record['scene']} per size, run {record['run_dir']}, "
             f"best of {record['repeats']} interleaved rounds.")
    lists = ["\n".join(f"- {line}" for line in record[key]) for key in ("targets", "notes")]
    write_section("image_inference", "\n\n".join([intro, text, lists[0], NOTES, lists[1]]), command)
    write_json(json_path, record)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
