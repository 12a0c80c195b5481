"""Web viewer benchmark: the exported student in headless Chromium (onnxruntime-web, wasm) vs Python.

For each variant and frame size, the same pose (the rig's first orbit pose, where the page starts) is
rendered by the page (``frames=N``: the median of the frames after the first, as the page reports it in
``data-ms``) and by :class:`export.runtime.LightField` (numpy + ONNX Runtime, the same threads, median of
N after a warm-up); both skip rays that miss the content box or cross only empty cells of the
empty-space grid (with a baseline: the split fp32 page with ``cells=0``). Also: page load to first frame,
and the PSNR of the page's frame against the Python runtime's (bit-level agreement gives ~59 dB: the 8-bit
rounding of the canvas).

    python -m benchmarks.viewer [--run-dir runs/mic_100] [--sizes 200 400] [--frames 6] [--threads 2]
        [--variants student_mlp.onnx student.onnx] [--image-run-dir RUN]

``--image-run-dir``: also an image model's run (``model.decoder=image``, exported with
``image_sizes=[[400,400]]`` for each size not its training size), timed beside the ray models: its files of
the ``--variants`` precisions at each of ``--sizes`` it has, one ``session.run`` a frame on both sides
(page and :class:`export.runtime.LightField`).

Split models (``student_mlp*.onnx``: the encoding in the page's JS, see ``export/split.py``) are timed
against the Python runtime of the whole graph of the same precision.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results import markdown_table, write_section
from core.io import write_json
from export.runtime import LightField, rays_cross_cells, rays_from_camera, rays_meet_box
from export.runtime.paths import orbit_poses
from export.viewer.browser import canvas_pixels, chromium_page, wait_for_frame
from export.viewer.page import ViewerConfig, write_viewer
from export.viewer.server import serving


def page_frame(url: str, file: str, c2w: np.ndarray, size: int, frames: int, threads: int,
               extra: str = "") -> dict[str, Any]:
    """The page's median ms, load-to-first-frame ms and pixels for one variant and size."""
    pose = ",".join(f"{x:.9g}" for x in c2w.reshape(-1))
    with chromium_page(timeout_s=600) as page:
        page.goto(f"{url}index.html?model={file}&pose={pose}&size={size}x{size}&threads={threads}"
                  f"&frames={frames}{extra}")
        state = wait_for_frame(page, frames, timeout_s=600)
        if state["frame"] < frames:
            raise RuntimeError(f"the page showed an error: {state['error']}")
        pixels = np.array(canvas_pixels(page), dtype=np.uint8).reshape(size, size, 4)[..., :3]
        state["hud"] = page.inner_text("#hud")
    state["pixels"] = pixels
    return state


def python_ms(field: LightField, c2w: np.ndarray, size: int, frames: int) -> tuple[float, np.ndarray]:
    """Median ms of ``frames`` renders after one warm-up, and the image."""
    image = field.render(c2w, image_size=(size, size))
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        field.render(c2w, image_size=(size, size))
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times), image


Row = tuple[list[Any], "dict[str, Any] | None"]  # a table row, and its JSON record (None: not recorded)


def ray_counts(field: LightField, c2w: np.ndarray, size: int) -> tuple[int, int]:
    """Rays of a ``size`` frame that meet the content box, and of those the ones the grid keeps."""
    K = np.asarray(field.meta.K, np.float32).copy()
    K[0] *= size / field.image_size[1]
    K[1] *= size / field.image_size[0]
    o, d = rays_from_camera(c2w, K, size, size)
    box = field.meta.content_aabb or field.meta.aabb
    in_box = rays_meet_box(o, d, box, field.meta.near, field.meta.far)
    n_box = int(in_box.sum())
    if field.cells is None:
        return n_box, n_box
    return n_box, int(rays_cross_cells(o[in_box], d[in_box], box, field.meta.near, field.meta.far,
                                       int(field.meta.student["n_points"]), field.cells).sum())


def compare(url: str, file: str, field: LightField, size: int, args: argparse.Namespace,
            rays: tuple[int, int] | None) -> Row:
    """The page's frame of ``file`` against ``field``'s (the Python runtime), at the rig's first pose;
    ``rays``: in the box and evaluated (``None``: an image model, which counts none)."""
    c2w = orbit_poses(field.meta.rig, 8)[0]
    page = page_frame(url, file, c2w, size, args.frames, args.threads)
    py_ms, image = python_ms(field, c2w, size, args.frames)
    want = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    mse = float(np.mean((page["pixels"].astype(np.float64) - image * 255) ** 2)) / 255**2
    page_psnr = -10 * np.log10(max(mse, 1e-12))
    max_diff = int(np.abs(page["pixels"].astype(int) - want).max())
    n_box, n_rays = rays or (None, None)
    row = [file, field.path.name, f"{size}x{size}", *(rays or ("", "")), round(page["ms"], 1),
           round(py_ms, 1), round(page["ms"] / py_ms, 2), round(page["load_ms"]), round(page_psnr, 1),
           max_diff]
    record = {"file": file, "python_file": field.path.name, "decoder": field.meta.decoder, "size": size,
              "rays_in_box": n_box, "rays_evaluated": n_rays, "page_ms": page["ms"],
              "encode_wait_ms": page["encode_ms"], "worker_ms": page["worker_ms"],
              "onnx_ms": page["model_ms"], "python_ms": py_ms, "load_to_first_frame_ms": page["load_ms"],
              "psnr_page_vs_runtime": page_psnr, "max_byte_diff": max_diff, "provider": page["provider"],
              "hud": page["hud"]}
    print(row, flush=True)
    return row, record


def ray_rows(url: str, folder: Path, entry: dict[str, Any], args: argparse.Namespace) -> list[Row]:
    """A ray model at each size (a split model against the whole graph of its precision; the fp32 split
    model also with ``cells=0``, the baseline)."""
    file, split = entry["file"], entry.get("kind") == "split"
    ref = ("student_int8.onnx" if entry["precision"] == "int8" else "student.onnx") if split else file
    field = LightField(folder / ref, threads=args.threads)
    c2w = orbit_poses(field.meta.rig, 8)[0]
    out: list[Row] = []
    for size in args.sizes:
        n_box, n_rays = ray_counts(field, c2w, size)
        if field.cells is not None and split and entry["precision"] == "fp32":
            base = page_frame(url, file, c2w, size, args.frames, args.threads, "&cells=0")
            out.append(([f"{file}, cells=0 (baseline)", "", f"{size}x{size}", n_box, n_box,
                         round(base["ms"], 1), "", "", round(base["load_ms"]), "", ""], None))
            print(out[-1][0], flush=True)
        out.append(compare(url, file, field, size, args, (n_box, n_rays)))
    return out


def image_rows(url: str, folder: Path, entry: dict[str, Any], args: argparse.Namespace) -> list[Row]:
    """An image model's file at its output size, when that is one of the sizes (a whole frame a call)."""
    H, W = entry["meta"]["output_size"]
    if H != W or H not in args.sizes:
        return []
    field = LightField(folder / entry["file"], threads=args.threads)
    return [compare(url, entry["file"], field, H, args, None)]


def bench_run(run_dir: str, variants: list[str], tmp: Path, args: argparse.Namespace) -> list[Row]:
    """Write the viewer of ``run_dir`` (wasm only) and time its models."""
    res = write_viewer(ViewerConfig(run_dir=run_dir, out_dir=str(tmp / Path(run_dir).name), variants=variants,
                                    default=variants[0], webgpu=False))
    folder, out = Path(res["out_dir"]), []
    with serving(folder) as url:
        for entry in json.loads((folder / "models.json").read_text())["models"]:
            if args.only is None or entry["file"] in args.only:
                rows = image_rows if entry["meta"]["decoder"] == "image" else ray_rows
                out += rows(url, folder, entry, args)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="runs/mic_100")
    ap.add_argument("--image-run-dir", default=None, help="also time this run's image model")
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 400])
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", nargs="+",
                    default=["student_mlp.onnx", "student_mlp_int8.onnx", "student.onnx",
                             "student_int8.onnx"])
    ap.add_argument("--json", default="benchmarks/viewer.json")
    ap.add_argument("--only", nargs="*", default=None,
                    help="time only these page models (the others are still written: split models need "
                         "their whole graph as the reference)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        done = bench_run(args.run_dir, list(args.variants), Path(tmp), args)
        if args.image_run_dir:  # its files of the ray variants' precisions (the split files are ray-only)
            image_variants = [v for v in args.variants if not v.startswith("student_mlp")]
            done += bench_run(args.image_run_dir, image_variants, Path(tmp), args)
    rows, records = [row for row, _ in done], [rec for _, rec in done if rec is not None]
    headers = ["page model", "Python model", "frame", "rays in the box", "rays evaluated", "Chromium ms",
               "Python ORT ms",
               "ratio", "page load to first frame (ms)", "PSNR page vs runtime (dB)", "max byte diff"]
    table = markdown_table(headers, rows)
    print(table)
    if args.only is not None:  # a partial table: printed, not recorded
        return
    write_json(args.json, {"threads": args.threads, "frames": args.frames, "rows": records})
    image = (f" Image model (`{args.image_run_dir}`): the whole frame in one call on both sides, no rays "
             "counted." if args.image_run_dir else "")
    write_section("viewer", table + f"\n\nHeadless Chromium (Debian's), onnxruntime-web wasm provider with "
                  f"{args.threads} threads (cross-origin isolated), the rig's first orbit pose; both sides "
                  "skip the rays that miss the content box or cross only empty cells of the empty-space "
                  "grid (\"rays evaluated\"; the page's split model runs the graph's exact test, the "
                  "Python runtime a slightly wider one and leaves the rest to the graph). `cells=0`: the "
                  "same page evaluating every ray in the box (the baseline). ms: "
                  f"median of {args.frames} frames after the first.{image} JSON: `{args.json}`.")


if __name__ == "__main__":
    main()
