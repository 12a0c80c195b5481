"""Benchmark of pseudo-data generation on the demo scene: views/s, rays/s, and where the time goes.

Runs ``data_gen.render.run`` with a trained demo teacher (``runs/mic_100/teacher/teacher.ckpt``, or
``--teacher PATH``; if neither exists a short teacher is trained first with ``teacher.train.run``) and
splits the time into teacher rendering (the baseline: what the teacher alone costs), encoding (PNG /
npy) and writing (tar, fsync, sha256), for the default PNG output and for float16 colors + depth +
alpha. Target: encoding + writing add at most 10% to the teacher's rendering time. The figures are
per view, so a few views suffice (the teacher dominates and is the slow part).

    python -m benchmarks.data_gen [--teacher PATH] [--n-views 8] [--train-seconds 60]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.results import markdown_table, write_section
from data_gen.render import DataGenConfig, run
from pipeline.config import to_dataclass
from testing.stages import compose

DEMO_CKPT = Path("runs/mic_100/teacher/teacher.ckpt")
BENCH_RUN = Path("runs/mic_100_bench")
CPU_PROFILE_VIEWS = 1000
TARGET = 0.10


def ensure_teacher(path: str | None, train_seconds: float) -> tuple[Path, str]:
    """A teacher checkpoint of the demo scene and how it was obtained.

    ``path`` if given, else the demo run's, else a short teacher trained into ``runs/mic_100_bench``
    (kept, so that a rerun reuses it).
    """
    if path:
        return Path(path), "given"
    if DEMO_CKPT.is_file():
        return DEMO_CKPT, "demo run"
    if (BENCH_RUN / "teacher" / "teacher.ckpt").is_file():
        return BENCH_RUN / "teacher" / "teacher.ckpt", "trained earlier by this script"
    from teacher.config import TeacherConfig
    from teacher.train import run as train_teacher

    logging.getLogger(__name__).warning("%s not found: training a %.0f s teacher", DEMO_CKPT, train_seconds)
    cfg = to_dataclass(compose("teacher", [f"run_dir={BENCH_RUN}", f"train.max_seconds={train_seconds}",
                                           "train.progress_bar=false", "eval.progress_bar=false"]),
                       TeacherConfig)
    metrics = train_teacher(cfg)
    origin = f"trained here for {metrics['train_seconds']:.0f} s, test PSNR {metrics['test']['psnr']:.2f} dB"
    return BENCH_RUN / "teacher" / "teacher.ckpt", origin


def measure(ckpt: Path, out: Path, n_views: int, *overrides: str) -> dict[str, Any]:
    """One data_gen run into a fresh folder ``out`` (one shard, so per-shard costs count fully)."""
    base = [f"teacher_ckpt={ckpt}", f"out_dir={out}", f"n_views={n_views}", f"views_per_shard={n_views}",
            "progress=false"]
    return run(to_dataclass(compose("data_gen", base + list(overrides)), DataGenConfig))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", help="teacher.ckpt of the demo scene (default: the demo run's)")
    parser.add_argument("--n-views", type=int, default=8)
    parser.add_argument("--train-seconds", type=float, default=60.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    variants = [
        ("PNG colors (default)", []),
        ("float16 colors + depth + alpha", ["rgb_format=npy16", "depth=true", "alpha=true"]),
    ]
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ckpt, origin = ensure_teacher(args.teacher, args.train_seconds)
        for i, (name, overrides) in enumerate(variants):
            m = measure(ckpt, work / f"pseudo{i}", args.n_views, *overrides)
            results[name] = m
            total = m["render_s"] + m["encode_s"] + m["write_s"]
            extra = (m["encode_s"] + m["write_s"]) / m["render_s"]
            io_ms = 1000 * (m["encode_s"] + m["write_s"]) / max(m["written"], 1)
            rows.append([name, m["written"], f"{m['views_per_s']:.3g}", f"{m['rays_per_s']:.3g}",
                         f"{m['render_s'] / total:.2%}", f"{m['encode_s'] / total:.2%}",
                         f"{m['write_s'] / total:.2%}", f"{io_ms:.2f}", f"{extra:.2%}"])
    default = results[variants[0][0]]
    overhead = (default["encode_s"] + default["write_s"]) / default["render_s"]
    table = markdown_table(["variant", "views", "views/s", "rays/s", "render", "encode", "write",
                            "encode+write ms/view", "(encode+write)/render"], rows)
    summary = (
        f"Teacher: `{ckpt}` ({origin}); {args.n_views} views of the demo scene per variant, "
        f"one shard each. Baseline: the teacher's own rendering time (render column).\n"
        f"Encoding + writing = {overhead:.2%} of the teacher's rendering time (target <= {TARGET:.0%}: "
        f"{'met' if overhead <= TARGET else 'NOT met'}).\n"
        f"Projected `profile=cpu` run ({CPU_PROFILE_VIEWS} views): "
        f"{CPU_PROFILE_VIEWS / default['views_per_s'] / 60:.1f} min (target < 5 min)."
    )
    print(table)
    print(summary)
    write_section("data_gen", table + "\n\n" + summary.replace("\n", "  \n"))


if __name__ == "__main__":
    main()
