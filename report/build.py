"""The run report: ``<run_dir>/report.md`` and ``report.html`` with metrics, images and curves.

The pipeline's last step (``python -m report``, :mod:`report.__main__`). Reads only files:
``teacher/metrics.json``, ``pseudo/meta.json``, ``student/metrics.json``, the student's CSV logs and its
side-by-side renders. Curves are drawn with matplotlib (Agg) into
``<run_dir>/report_files/``.
"""

from __future__ import annotations

import csv
import html
import logging
import os
from pathlib import Path
from typing import Any

from core.io import atomic_write, read_json

log = logging.getLogger(__name__)

STAGES = ("distill", "finetune")


def read_curves(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` from Lightning CSV logs.

    ``log_dir`` is a stage's log folder holding ``version_*/metrics.csv`` (one version per start of the
    stage: a resumed run continues the steps) or a version folder itself; later values of a step win.
    """
    files = [log_dir / "metrics.csv"] if (log_dir / "metrics.csv").is_file() else sorted(
        log_dir.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[-1]))
    curves: dict[str, dict[int, float]] = {}
    for path in files:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                step = int(row.get("step") or 0)
                for key, value in row.items():
                    if key in ("step", "epoch") or value in (None, ""):
                        continue
                    curves.setdefault(key, {})[step] = float(value)
    return {k: sorted(v.items()) for k, v in curves.items()}


def _fmt(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def metrics_rows(run_dir: Path) -> list[list[str]]:
    """Rows ``[model, test PSNR, SSIM, steps, train seconds]`` of the teacher and each student stage."""
    teacher = read_json(run_dir / "teacher" / "metrics.json")
    student = read_json(run_dir / "student" / "metrics.json")
    rows = []
    if teacher:
        t = teacher.get("test", {})
        rows.append(["teacher", _fmt(t.get("psnr")), _fmt(t.get("ssim"), 4), str(teacher.get("steps", "-")),
                     _fmt(teacher.get("train_seconds"), 0)])
    for name in STAGES:
        s = student.get("stages", {}).get(name)
        if s:
            t = s.get("test", {})
            rows.append([f"student ({name})", _fmt(t.get("psnr")), _fmt(t.get("ssim"), 4),
                         str(s.get("steps", "-")), _fmt(s.get("seconds"), 0)])
    return rows


HEADERS = ["model", "test PSNR (dB)", "test SSIM", "steps", "train s"]


def metrics_table(run_dir: Path) -> str:
    """The metrics table as markdown."""
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(r) + " |" for r in metrics_rows(Path(run_dir))]
    return "\n".join(lines)


def plot_curves(run_dir: Path, out: Path) -> Path | None:
    """Training-loss PSNR and validation PSNR per stage against the step; ``None`` without logs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = run_dir / "student" / "logs" / "csv"
    curves = {name: read_curves(logs / name) for name in STAGES}
    if not any(curves.values()):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    offset = 0
    for name in STAGES:
        c = curves[name]
        for ax, key in zip(axes, ("train/psnr", "val/psnr")):
            if key in c:
                steps, values = zip(*c[key])
                marker = "." if key == "val/psnr" else None
                ax.plot([s + offset for s in steps], values, label=name, marker=marker)
        steps_in_stage = max((s for v in c.values() for s, _ in v), default=0)
        offset += steps_in_stage
    for ax, title in zip(axes, ("training batch PSNR (dB)", "validation PSNR (dB, test views)")):
        ax.set_title(title)
        ax.set_xlabel("step (stages concatenated)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = out / "curves.png"
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return path


def student_line(student: dict[str, Any]) -> str:
    """One sentence on the student's design and cost from its ``metrics.json`` (either decoder)."""
    model = student.get("model", {})
    if model.get("decoder") == "image":
        im = model.get("image", {})
        detail = (f", a full-resolution detail tri-plane ({im.get('detail_resolution')} px x "
                  f"{im.get('detail_channels')} channels) read once per pixel at a predicted depth"
                  if im.get("detail_channels") else "")
        return (f"Student: image decoder (camera in, image out): a ray map at 1/{im.get('scale')} of the "
                f"output, {im.get('n_points')} points/ray reading tri-planes of {im.get('resolutions')} px x "
                f"{im.get('channels')} channels, a 1x1 body {im.get('width')} wide x {im.get('depth')}, a "
                f"DepthToSpace tail{detail}; {student.get('n_params', 0) / 1e6:.2f} M parameters, "
                f"{student.get('flops_per_frame', 0) / 1e9:.2f} GFLOPs per {student.get('frame_size')} "
                f"frame, trained in {student.get('precision')}.")
    grid = model.get("grid", {})
    encoding = (f"hash-grid features ({grid.get('n_levels')} levels x {grid.get('n_features')}, "
                f"2^{grid.get('log2_hashmap_size')} entries, up to {grid.get('max_resolution')} cells; "
                f"{student.get('table_params', 0) / 1e6:.2f} M table parameters, "
                f"{student.get('lookups_per_ray', 0)} table reads per ray)"
                if model.get("encoding") == "hash"
                else f"positional encoding ({model.get('n_freqs')} octaves)")
    return (f"Student: {model.get('depth')} layers, width {model.get('width')}, "
            f"{model.get('n_points')} points/ray encoded by {encoding}, "
            f"{student.get('n_params', 0) / 1e6:.2f} M parameters, "
            f"{student.get('flops_per_ray', 0) / 1e6:.2f} MFLOPs per ray, "
            f"trained in {student.get('precision')}.")


def _summary(run_dir: Path) -> list[str]:
    student = read_json(run_dir / "student" / "metrics.json")
    meta = read_json(run_dir / "pseudo" / "meta.json")
    model = student.get("model", {})
    lines = [student_line(student)] if model else []
    if meta:
        facts = meta.get("scene", {})  # the scene facts (core.scene_facts.SceneFacts)
        kind = facts.get("scene_kind", "object")
        space = ("forward-facing: rays in NDC, no background" if facts.get("ndc")
                 else "object: a box around it, misses show the background")
        lines.append(f"Scene kind: {kind} ({space}).")
        lines.append(f"Pseudo-data: {meta.get('n_views')} teacher views of "
                     f"{meta.get('image_size')} in {len(meta.get('shards', []))} shards "
                     f"({meta.get('sampler', {}).get('name')} sampler).")
    t, s = student.get("teacher_test_psnr"), student.get("test", {}).get("psnr")
    if isinstance(t, (int, float)) and isinstance(s, (int, float)):
        lines.append(f"Student - teacher test PSNR: {s - t:+.2f} dB.")
    return lines


def viewer_lines(run_dir: Path) -> list[str]:
    """The web viewer's part of the report (markdown lines; empty when no viewer was written)."""
    viewer = run_dir / "viewer"
    if not (viewer / "index.html").is_file():
        return []
    lines = ["## Web viewer", "",
             "[viewer/index.html](viewer/index.html), a static folder (the page, the ONNX files, "
             f"onnxruntime-web). Open it with `python -m export.viewer run_dir={run_dir} serve=true` (or any "
             "static host that sends `Cross-Origin-Opener-Policy: same-origin` and "
             "`Cross-Origin-Embedder-Policy: require-corp`).", ""]
    shot = read_json(viewer / "screenshot.json")
    if (viewer / "screenshot.png").is_file():
        lines += ["![viewer](viewer/screenshot.png)", ""]
    if shot:
        lines += [f"Headless Chromium on this machine: first full frame of `{shot.get('model')}` after "
                  f"{shot.get('load_ms', float('nan')):.0f} ms from page load, "
                  f"{shot.get('ms', float('nan')):.0f} ms to render it.", ""]
    return lines


def write_report(run_dir: Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``run_dir``; returns both paths."""
    run_dir = Path(run_dir)
    files = run_dir / "report_files"
    files.mkdir(parents=True, exist_ok=True)
    curves = plot_curves(run_dir, files)
    renders = sorted((run_dir / "student" / "renders").glob("test_*.png"))
    student = read_json(run_dir / "student" / "metrics.json")
    caption = "ground truth | teacher | student" if student.get("renders_have_teacher") else \
        "ground truth | student (no teacher test renders found in teacher/renders/)"
    rel = [os.path.relpath(p, run_dir) for p in renders]
    md = [f"# Report: {run_dir.name}", "", *_summary(run_dir), "", "## Test metrics", "",
          metrics_table(run_dir), ""]
    if curves is not None:
        md += ["## Training curves", "", f"![curves]({os.path.relpath(curves, run_dir)})", ""]
    if rel:
        md += ["## Test views", "", caption, ""] + [f"![{Path(r).stem}]({r})" for r in rel] + [""]
    md += viewer_lines(run_dir)
    md_path = atomic_write(run_dir / "report.md", lambda p: p.write_text("\n".join(md)))
    page = _html(run_dir, curves, rel, caption)
    html_path = atomic_write(run_dir / "report.html", lambda p: p.write_text(page))
    return md_path, html_path


def _html(run_dir: Path, curves: Path | None, renders: list[str], caption: str) -> str:
    esc = html.escape
    rows = metrics_rows(run_dir)
    table = "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in HEADERS) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Report: {esc(run_dir.name)}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:2px 10px;"
             "border-bottom:1px solid #ccc}img{image-rendering:pixelated;margin:4px}</style></head><body>",
             f"<h1>Report: {esc(run_dir.name)}</h1>"]
    parts += [f"<p>{esc(line)}</p>" for line in _summary(run_dir)]
    parts += ["<h2>Test metrics</h2>", table]
    if curves is not None:
        src = esc(os.path.relpath(curves, run_dir))
        parts += ["<h2>Training curves</h2>", f"<img src='{src}' alt='curves'>"]
    if renders:
        parts += ["<h2>Test views</h2>", f"<p>{esc(caption)}</p>"]
        parts += [f"<div><img src='{esc(r)}' width='{3 * 200}' alt='{esc(r)}'></div>" for r in renders]
    if (run_dir / "viewer" / "index.html").is_file():
        parts += ["<h2>Web viewer</h2>", "<p><a href='viewer/index.html'>viewer/index.html</a> (serve it "
                  f"with <code>python -m export.viewer run_dir={esc(str(run_dir))} serve=true</code>)</p>"]
        if (run_dir / "viewer" / "screenshot.png").is_file():
            parts += ["<img src='viewer/screenshot.png' width='540' alt='viewer'>"]
    return "\n".join(parts + ["</body></html>\n"])
