"""Web viewer benchmark: the exported student in headless Chromium (onnxruntime-web, wasm) vs Python.

For each variant and frame size, the same pose (the rig's first orbit pose, where the page starts) is
rendered by the page (``frames=N``: the median of the frames after the first, as the page reports it in
``data-ms``) and by :class:`export.runtime.LightField` (numpy + ONNX Runtime, the same threads, median of
N after a warm-up); both skip rays that miss the content box or cross only empty cells of the
empty-space grid (with a baseline: the split fp32 page with ``cells=0``). Also: page load to first frame,
and the PSNR of the page's frame against the Python runtime's (bit-level agreement gives ~59 dB: the 8-bit
rounding of the canvas).

    python -m benchmarks.viewer [--run-dir runs/mic_100] [--sizes 200 400] [--frames 6] [--threads 2]
        [--variants student_mlp.onnx student.onnx]

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="runs/mic_100")
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

    rows, records = [], []
    with tempfile.TemporaryDirectory() as tmp:
        res = write_viewer(ViewerConfig(run_dir=args.run_dir, out_dir=str(Path(tmp) / "viewer"),
                                        variants=list(args.variants), default=args.variants[0],
                                        webgpu=False))
        folder = Path(res["out_dir"])
        with serving(folder) as url:
            manifest = {m["file"]: m for m in json.loads((folder / "models.json").read_text())["models"]}
            for file in res["models"]:
                if args.only is not None and file not in args.only:
                    continue
                # the split model (JS encoding + MLP) is compared with the whole graph of its precision
                ref = file
                if manifest[file].get("kind") == "split":
                    ref = "student_int8.onnx" if manifest[file]["precision"] == "int8" else "student.onnx"
                field = LightField(folder / ref, threads=args.threads)
                c2w = orbit_poses(field.meta.rig, 8)[0]
                for size in args.sizes:
                    K = np.asarray(field.meta.K, np.float32).copy()
                    K[0] *= size / field.image_size[1]
                    K[1] *= size / field.image_size[0]
                    o, d = rays_from_camera(c2w, K, size, size)
                    box = field.meta.content_aabb or field.meta.aabb
                    in_box = rays_meet_box(o, d, box, field.meta.near, field.meta.far)
                    n_box = int(in_box.sum())
                    n_rays = n_box
                    if field.cells is not None:
                        n_rays = int(rays_cross_cells(o[in_box], d[in_box], box, field.meta.near,
                                                      field.meta.far, int(field.meta.student["n_points"]),
                                                      field.cells).sum())
                        if manifest[file].get("kind") == "split" and manifest[file]["precision"] == "fp32":
                            # the baseline: the same page evaluating every ray that meets the box
                            base = page_frame(url, file, c2w, size, args.frames, args.threads, "&cells=0")
                            rows.append([f"{file}, cells=0 (baseline)", "", f"{size}x{size}", n_box, n_box,
                                         round(base["ms"], 1), "", "", round(base["load_ms"]), "", ""])
                            print(rows[-1], flush=True)
                    page = page_frame(url, file, c2w, size, args.frames, args.threads)
                    py_ms, image = python_ms(field, c2w, size, args.frames)
                    want = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
                    mse = float(np.mean((page["pixels"].astype(np.float64) - image * 255) ** 2)) / 255**2
                    page_psnr = -10 * np.log10(max(mse, 1e-12))
                    max_diff = int(np.abs(page["pixels"].astype(int) - want).max())
                    rows.append([file, ref, f"{size}x{size}", n_box, n_rays, round(page["ms"], 1),
                                 round(py_ms, 1),
                                 round(page["ms"] / py_ms, 2), round(page["load_ms"]), round(page_psnr, 1),
                                 max_diff])
                    records.append({"file": file, "python_file": ref, "size": size, "rays_in_box": n_box,
                                    "rays_evaluated": n_rays,
                                    "page_ms": page["ms"], "encode_wait_ms": page["encode_ms"],
                                    "worker_ms": page["worker_ms"], "onnx_ms": page["model_ms"],
                                    "python_ms": py_ms, "load_to_first_frame_ms": page["load_ms"],
                                    "psnr_page_vs_runtime": page_psnr, "max_byte_diff": max_diff,
                                    "hud": page["hud"]})
                    print(rows[-1], flush=True)
    headers = ["page model", "Python model", "frame", "rays in the box", "rays evaluated", "Chromium ms",
               "Python ORT ms",
               "ratio", "page load to first frame (ms)", "PSNR page vs runtime (dB)", "max byte diff"]
    table = markdown_table(headers, rows)
    print(table)
    if args.only is not None:  # a partial table: printed, not recorded
        return
    write_json(args.json, {"threads": args.threads, "frames": args.frames, "rows": records})
    write_section("viewer", table + f"\n\nHeadless Chromium (Debian's), onnxruntime-web wasm provider with "
                  f"{args.threads} threads (cross-origin isolated), the rig's first orbit pose; both sides "
                  "skip the rays that miss the content box or cross only empty cells of the empty-space "
                  "grid (\"rays evaluated\"; the page's split model runs the graph's exact test, the "
                  "Python runtime a slightly wider one and leaves the rest to the graph). `cells=0`: the "
                  "same page evaluating every ray in the box (the baseline). ms: "
                  f"median of {args.frames} frames after the first. JSON: `{args.json}`.")


if __name__ == "__main__":
    main()
