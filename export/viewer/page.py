"""``python -m export.viewer``: write the static web viewer of an exported student, optionally serve it.

``<run_dir>/viewer/`` gets ``index.html``, the page's JS (``export/viewer/web/``), the chosen ONNX variants,
``models.json`` (each variant's file, size and metadata, which the page builds its rays from; an image model's
files at every exported output size, ``student_<H>x<W>[_fp16|_int8].onnx``, beside its own) and the
onnxruntime-web runtime files, copied from the npm package that ``scripts/setup.sh`` installs into
``export/viewer/web/node_modules`` (pinned by ``export/viewer/web/package-lock.json``). The folder is
complete: any static host that sends the two cross-origin isolation headers (``export/viewer/server.py``)
serves it, and the page fetches nothing else. ``serve=true`` serves it on 127.0.0.1 and prints the URL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import hydra
import onnx
from omegaconf import DictConfig

from core.errors import UserError, exit_on_user_error
from core.io import write_bytes, write_json
from export.runtime import ModelError, ModelMeta
from export.viewer.config import ViewerConfig
from pipeline.config import to_dataclass

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent / "web"
PAGE_FILES = ("index.html", "viewer.js", "camera.js", "image.js", "provider.js", "encoder.js",
              "encode_worker.js", "hashgrid.wasm")
ORT_PACKAGE_DIST = WEB_DIR / "node_modules" / "onnxruntime-web" / "dist"
WASM_RUNTIME = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
WEBGPU_RUNTIME = ("ort.webgpu.min.js", "ort-wasm-simd-threaded.asyncify.mjs",
                  "ort-wasm-simd-threaded.asyncify.wasm")
# what the page needs to build rays and composite, or an image model's camera (ModelMeta fields)
META_KEYS = ("scene_name", "near", "far", "aabb", "content_aabb", "image_size", "K", "background", "batch",
             "rig", "encoding", "precision", "ray_space", "ndc", "occupancy", "student", "decoder",
             "output_size")
SIZED_FILE = re.compile(r"student_(\d+)x(\d+)(_fp16|_int8)?\.onnx")  # export.variants.variant_filename
SCREENSHOT = "screenshot.png"
SPLIT_MLP, SPLIT_MLP_INT8, SPLIT_TABLE = "student_mlp.onnx", "student_mlp_int8.onnx", "student_grid.bin"
SPLIT_TOL = 1e-4  # max abs error of the split MLP graph against PyTorch


def read_meta(path: Path) -> ModelMeta:
    """The light-field metadata of an ONNX file (without loading its weights into a session)."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for a corrupt file
        raise UserError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    try:
        return ModelMeta.from_props({p.key: p.value for p in proto.metadata_props}, path)
    except ModelError as exc:
        raise UserError(str(exc)) from None


def model_entries(export_dir: Path, files: list[str]) -> list[dict[str, Any]]:
    """``models.json`` rows for the variant files present in ``export_dir`` (in the given order)."""
    entries = []
    for name in files:
        path = export_dir / name
        if not path.is_file():
            log.info("viewer: %s not exported, left out", path)
            continue
        meta = read_meta(path)  # boxes, near < far: checked by ModelMeta.from_props
        entries.append({"file": name, "precision": meta.precision, "bytes": path.stat().st_size,
                        "meta": {k: getattr(meta, k) for k in META_KEYS}})
    return entries


def sized_variants(export_dir: Path, files: list[str]) -> list[str]:
    """An image model's files at its other exported output sizes: ``student_<H>x<W><rest>`` for each
    ``student<rest>`` of ``files`` and each size that ``export_dir`` holds a file of (sorted by size)."""
    found = (SIZED_FILE.fullmatch(p.name) for p in export_dir.glob("student_*x*.onnx"))
    sizes = sorted({(int(m[1]), int(m[2])) for m in found if m})
    return [f"student_{H}x{W}{name[len('student'):]}" for H, W in sizes for name in files
            if name.startswith("student") and not SIZED_FILE.fullmatch(name)]


def split_files(cfg: ViewerConfig, export_dir: Path, base: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """Write the split student (``export/split.py``) into ``out``; its ``models.json`` rows.

    The checkpoint must be the one the export was made from (``export.json``'s sha256).

    Raises:
        UserError: no checkpoint, or one other than the export's.
    """
    import numpy as np
    import torch

    from core.io import sha256_file, write_bytes
    from export.split import encoder_facts, mlp_int8, mlp_onnx, run_mlp, table_bytes
    from student.checkpoint import load_student
    from student.model import R2LStudent

    ckpt = Path(cfg.checkpoint or Path(cfg.run_dir) / "student" / "student.ckpt")
    report = export_dir / "export.json"
    try:
        want = json.loads(report.read_text()).get("checkpoint_sha256")
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{report}: unreadable export report (needed to match the checkpoint)") from None
    if not ckpt.is_file():
        raise UserError(f"{ckpt}: student checkpoint not found (the split viewer model needs it; split=false "
                        "to write only the exported ONNX files)")
    if sha256_file(ckpt) != want:
        raise UserError(f"{ckpt}: not the checkpoint {export_dir} was exported from (sha256 differs): run "
                        "python -m export.onnx again, or split=false")
    model, _ = load_student(ckpt)
    assert isinstance(model, R2LStudent)  # the checkpoint (sha256 checked) of a hash-grid ray export
    mlp = mlp_onnx(model)
    feats = torch.randn(512, model.encoder.out_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model.forward_encoded(feats).numpy()
    err = float(np.abs(run_mlp(mlp, feats.numpy()) - ref).max())
    if err > SPLIT_TOL:
        raise RuntimeError(f"split MLP disagrees with PyTorch: max abs error {err:.3g} > {SPLIT_TOL:g}")
    table = table_bytes(model)
    write_bytes(out / SPLIT_TABLE, table)
    facts = encoder_facts(model)
    rows = []
    # fp32 first: the page's default when `default` is null (the first model written). The int8 MLP
    # (0.045 dB below on the demo student's 200 test views) was no faster across scenes: 0.94x the fp32
    # frame on mic, 1.14x on the tankard at 200x200, and its page took 3.3-3.7 s to a first frame there
    # against 1.0-1.4 s (benchmarks/RESULTS.md, viewer)
    for name, proto, precision in ((SPLIT_MLP, mlp, "fp32"), (SPLIT_MLP_INT8, mlp_int8(mlp), "int8")):
        write_bytes(out / name, proto.SerializeToString())
        meta = {**base["meta"], "precision": precision, "batch": 0}
        rows.append({"file": name, "precision": precision, "kind": "split", "table": SPLIT_TABLE,
                     "bytes": (out / name).stat().st_size + len(table), "meta": meta, "encoder": facts})
    return rows


def runtime_files(ort_dir: Path, webgpu: bool) -> list[Path]:
    """The onnxruntime-web files the page loads.

    Raises:
        UserError: the npm package is not installed (names the folder and how to install it).
    """
    names = WASM_RUNTIME + (WEBGPU_RUNTIME if webgpu else ())
    missing = [n for n in names if not (ort_dir / n).is_file()]
    if missing:
        npm = f"npm ci --prefix {WEB_DIR}"  # from package-lock.json, also in an installed wheel
        hint = (f"run scripts/setup.sh (or {npm}), or point ort_dir= at its dist folder"
                if shutil.which("npm") else
                f"npm is not installed: install Node.js and npm, then run scripts/setup.sh (or {npm})")
        raise UserError(f"{ort_dir}: onnxruntime-web is not installed ({missing[0]} missing): {hint}")
    return [ort_dir / n for n in names]


def _replace_dir(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out``, replacing an old one (two renames)."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def write_viewer(cfg: ViewerConfig) -> dict[str, Any]:
    """Write the viewer folder; returns ``out_dir``, ``models``, ``bytes`` (folder size)."""
    export_dir = Path(cfg.export_dir or Path(cfg.run_dir) / "export")
    out = Path(cfg.out_dir or Path(cfg.run_dir) / "viewer")
    if not export_dir.is_dir():
        raise UserError(f"{export_dir}: no exported model (run python -m export.onnx first)")
    entries = model_entries(export_dir, list(cfg.variants))
    if not entries:
        raise UserError(f"{export_dir}: none of the variants {list(cfg.variants)} is there")
    if entries[0]["meta"]["decoder"] == "image":  # one file per output size: the others too
        entries += model_entries(export_dir, sized_variants(export_dir, list(cfg.variants)))
    runtime = runtime_files(Path(cfg.ort_dir) if cfg.ort_dir else ORT_PACKAGE_DIST, cfg.webgpu)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    tmp.mkdir()
    try:
        for name in PAGE_FILES:
            shutil.copy2(WEB_DIR / name, tmp / name)
        for path in runtime:
            shutil.copy2(path, tmp / path.name)
        for entry in entries:
            shutil.copy2(export_dir / entry["file"], tmp / entry["file"])
        if cfg.split and entries[0]["meta"]["encoding"] == "hash":
            entries = split_files(cfg, export_dir, entries[0], tmp) + entries
        files = [e["file"] for e in entries]
        default = cfg.default or files[0]
        if default not in files:
            raise UserError(f"default={default!r} is not among the models written ({files})")
        write_json(tmp / "models.json", {"default": default, "webgpu": cfg.webgpu, "models": entries})
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(p.stat().st_size for p in out.iterdir())
    return {"out_dir": str(out), "models": files, "bytes": size}


def take_screenshot(out: Path, browser: str | None, timeout_s: float = 120.0) -> dict[str, Any]:
    """Open the viewer in headless Chromium, wait for the first full frame, save ``screenshot.png``."""
    from export.viewer.browser import chromium_page, wait_for_frame
    from export.viewer.server import serving

    with serving(out) as url, chromium_page(browser, timeout_s) as page:
        page.set_viewport_size({"width": 720, "height": 640})
        page.goto(url + "index.html")
        state = wait_for_frame(page, 1, timeout_s)
        if not state["frame"]:
            raise UserError(f"{out}: the viewer showed an error in Chromium: {state['error']}")
        write_bytes(out / SCREENSHOT, page.screenshot(type="png"))
        model = json.loads((out / "models.json").read_text())["default"]
        write_json(out / "screenshot.json", {"model": model, "ms": state["ms"], "load_ms": state["load_ms"]})
    return state


def run(cfg: ViewerConfig) -> dict[str, Any]:
    """Write the viewer, then its screenshot (``screenshot=null``: when Chromium and playwright are here)."""
    res = write_viewer(cfg)
    out = Path(res["out_dir"])
    want = cfg.screenshot
    if want is None:
        from export.viewer.browser import find_browser

        try:
            import playwright  # noqa: F401
            have = find_browser(cfg.browser) is not None
        except ImportError:
            have = False
        want = have
        if not have:
            log.info("viewer: no Chromium + playwright here, no screenshot (screenshot=true to require one)")
    res["screenshot"] = None
    if want:
        state = take_screenshot(out, cfg.browser)
        res["screenshot"] = str(out / SCREENSHOT)
        res["first_frame"] = state
    return res


def serve(out: Path, host: str, port: int) -> None:
    """Serve the viewer folder until interrupted."""
    from export.viewer.server import make_server

    try:
        server = make_server(out, host, port)
    except OSError as exc:
        raise UserError(f"{host}:{port}: cannot serve the viewer ({exc.strerror}); try port=0") from None
    print(f"serving {out} on http://{host}:{server.server_address[1]}/index.html (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()




@hydra.main(config_path="../../conf", config_name="viewer", version_base="1.3")
@exit_on_user_error
def main(dcfg: DictConfig) -> None:
    """Hydra entry point: ``python -m export.viewer [serve=true] [overrides]``."""
    cfg = to_dataclass(dcfg, ViewerConfig)
    start = time.perf_counter()
    res = run(cfg)
    out = Path(res["out_dir"])
    print(f"viewer: {out} ({len(res['models'])} models, {res['bytes'] / 1e6:.1f} MB in all) in "
          f"{time.perf_counter() - start:.1f} s"
          + (f"; screenshot {res['screenshot']}" if res["screenshot"] else ""))
    if cfg.serve:
        serve(out, cfg.host, cfg.port)
    else:
        print(f"open it with: python -m export.viewer run_dir={cfg.run_dir} serve=true "
              f"(or serve {out} with the headers Cross-Origin-Opener-Policy: same-origin and "
              "Cross-Origin-Embedder-Policy: require-corp)")

