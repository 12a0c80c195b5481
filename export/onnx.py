"""``python -m export.onnx``: the student as self-contained ONNX files (fp32, fp16, int8), checked.

Reads ``<run_dir>/student/student.ckpt``, writes ``<run_dir>/export/``: ``student.onnx`` (fp32, dynamic
batch), ``student_fp16.onnx``, ``student_int8.onnx``, ``student_static.onnx`` (one full image of rays per
call, at most ``static_max_batch``) and ``export.json`` (parity, test PSNR per variant, sizes in bytes).

An image student (``model.decoder=image``) exports as camera-in, image-out graphs (:mod:`export.image`)
instead: ``student.onnx`` / ``_fp16`` / ``_int8`` at the training image size, ``student_<H>x<W>[_fp16|
_int8].onnx`` for each of ``image_sizes``; every file in the portable op set, the fp32 ones within
``parity.fp32_tol`` of ``ImageStudent.render`` on random and training poses, the int8 ones published only
within ``int8.max_psnr_drop_db`` of fp32's test PSNR. The ray model's static-batch and fused-encoding files
(and the page's split model) have no image counterpart.
Every file's metadata and ``export.json`` carry the checkpoint's sha256 (``checkpoint_sha256``): a
rerun always exports again from the checkpoint it is given.

Every file is written under a hidden staging folder of ``export/`` and checked there; only when the fp32
graph passes the parity gate are they renamed into place, ``export.json`` last. A failed or killed export
leaves the previous set as it was.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import onnx
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from core.errors import UserError, exit_on_user_error
from core.io import sha256_file, write_json
from core.ndc import NDCSpace
from core.rays import generate_rays
from core.rig import camera_rig
from core.scene_facts import SceneFacts
from export.config import ExportConfig, Int8Config, ParityConfig, for_decoder
from export.fused import FusedEncodingStudent
from export.image import write_image_variants
from export.parity import (
    evaluate_variant,
    image_report,
    mean_view_psnr,
    n_test_views,
    scene_rays,
    torch_rgb,
    view_rays,
)
from export.runtime.meta import FORMAT, FORMAT_VERSION, ModelMeta
from export.runtime.meta import SceneFacts as RuntimeSceneFacts
from export.variants import (
    INT8_MODES,
    PRECISIONS,
    is_variant_file,
    save_checked,
    set_metadata,
    to_fp16,
    to_int8,
    trace_student,
    variant_filename,
)
from pipeline.config import check_command_line, to_dataclass
from pipeline.runlock import locked_run
from pipeline.seeding import seed_everything
from scenes.load import Scene, load_scene
from student.checkpoint import Student, load_student, model_config
from student.image_model import ImageStudent
from student.model import R2LStudent, flops_per_ray

# the stage's config lives in export.config (importing it registers the schema); re-exported here
__all__ = ["ExportConfig", "Int8Config", "ParityConfig", "build_meta", "calibration_rays", "facts_with_rig",
           "main", "run"]

log = logging.getLogger(__name__)
DEVICE_LIMIT_BYTES = 8_000_000  # the fp32 file's budget on devices (MobileR2L ships ~8.6 MB in fp16)
REPORT_NAME = "export.json"
FAILED_REPORT_NAME = "export_failed.json"  # the report of an export that failed the parity gate
STAGING_PREFIX = ".staging-"  # this run's files until they pass the gate


def build_meta(model: Student, facts: SceneFacts, opset: int) -> ModelMeta:
    """The ONNX metadata of a student and its scene facts, which every variant carries: the facts under
    one key (``lightfield.scene``, read back by the runtime's twin of the record), beside the model's own
    (``precision`` and ``batch`` are set per file, an image model's ``output_size`` too; a rig-less record
    of an older checkpoint gets none: see :func:`facts_with_rig`).

    An image model's: ``decoder="image"``, ``student`` its :class:`student.image_model.ImageStudentConfig`,
    ``encoding="planes"``, ``output_size`` the training image size, ``flops_per_ray`` 0 (not counted)."""
    if isinstance(model, ImageStudent):
        return ModelMeta(scene=RuntimeSceneFacts(**facts.to_dict()), opset=opset,
                         student=dataclasses.asdict(model.cfg), encoding="planes", decoder="image",
                         output_size=list(facts.image_size))
    return ModelMeta(
        scene=RuntimeSceneFacts(**facts.to_dict()),
        opset=opset,
        student={k: v for k, v in dataclasses.asdict(model.cfg).items() if k not in ("decoder", "image")},
        flops_per_ray=flops_per_ray(model.cfg),
    )


def facts_with_rig(facts: SceneFacts, scene: Scene) -> SceneFacts:
    """``facts``, with the training rig of ``scene`` (:func:`core.rig.camera_rig`) if a checkpoint of
    before the rig travelled in the scene facts left it out."""
    if facts.rig is not None:
        return facts
    ndc = NDCSpace.from_dict(facts.ndc) if facts.ndc is not None else None
    return dataclasses.replace(facts, rig=camera_rig(scene.split("train").c2w, ndc))


def _statics(cfg: ExportConfig) -> list[str]:
    assert cfg.static_variants is not None, "export.config.for_decoder sets it"
    return cfg.static_variants


def _check_inputs(cfg: ExportConfig, facts: SceneFacts, scene: Scene, ckpt: Path, encoding: str) -> None:
    unknown = set(cfg.variants + _statics(cfg) + (cfg.fused_encoding or [])) - set(PRECISIONS)
    if unknown or "fp32" not in cfg.variants:
        raise UserError(f"export variants must include fp32 and be among {list(PRECISIONS)}, "
                        f"got {cfg.variants} / {cfg.static_variants}")
    if cfg.static_max_batch < 1:
        raise UserError(f"static_max_batch must be positive, got {cfg.static_max_batch}")
    if encoding == "hash" and cfg.opset < 18:
        raise UserError(f"{ckpt}: the hash encoding needs opset >= 18 (BitwiseXor), got opset={cfg.opset}")
    if cfg.int8.mode not in INT8_MODES:
        raise UserError(f"int8.mode must be one of {list(INT8_MODES)}, got {cfg.int8.mode!r}")
    test_hw = list(scene.split("test").hw)
    if list(facts.image_size) != test_hw:
        raise UserError(f"{ckpt}: student trained at image size {facts.image_size} but scene "
                        f"{scene.root} has test images of {test_hw} (set scene.path / scene.downscale)")


def calibration_rays(scene: Scene, cfg: Int8Config, model: R2LStudent, gen: torch.Generator
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Batches of random pixels' rays from the training views (the distribution the model serves).

    Only rays that meet the student's content box: the others never reach the network's output (the
    graph gives them the background, the runtime skips them), but their encodings lie outside
    ``[-1, 1]`` and would stretch the calibrated activation ranges (measured: -0.5 dB for static int8).
    """
    train = scene.split("train")
    H, W = train.hw
    rays = [generate_rays(train.c2w[i], train.K[i], H, W) for i in range(train.n_views)]
    rays_o, rays_d = torch.cat([r[0] for r in rays]), torch.cat([r[1] for r in rays])
    hit = model.encoder.segment(rays_o, rays_d)[2]  # the graph's own hit test
    if bool(hit.any()):
        rays_o, rays_d = rays_o[hit], rays_d[hit]
    idx = torch.randperm(rays_o.shape[0], generator=gen)[: cfg.calib_rays]
    return [(rays_o[i].numpy(), rays_d[i].numpy()) for i in idx.chunk(max(cfg.calib_batches, 1))]


def _write_variants(cfg: ExportConfig, model: R2LStudent, meta: ModelMeta, scene: Scene, out_dir: Path,
                    gen: torch.Generator) -> dict[tuple[str, bool], Path]:
    """Trace, convert, attach metadata, check and write every requested file."""
    H, W = meta.image_size
    int8 = "int8" in cfg.variants + _statics(cfg)
    calib = calibration_rays(scene, cfg.int8, model, gen) if int8 else None
    paths: dict[tuple[str, bool], Path] = {}
    for static, precisions in ((False, cfg.variants), (True, _statics(cfg))):
        n = min(H * W, cfg.static_max_batch) if static else 1024
        example = scene_rays(scene, torch.tensor(meta.aabb), n, gen)
        traced: dict[bool, onnx.ModelProto] = {}  # fused encoding or not -> fp32 graph
        for precision in precisions:
            fused = precision in (cfg.fused_encoding or []) and model.cfg.encoding == "pe"  # folds sin/cos
            if fused not in traced:
                module = FusedEncodingStudent(model).eval() if fused else model
                traced[fused] = trace_student(module, example, static=static, opset=cfg.opset)
            fp32 = traced[fused]
            if precision == "fp16":
                proto = to_fp16(_copy(fp32))
            elif precision == "int8":
                batches = [_fit(o, d, n) for o, d in calib or []] if static else calib
                proto = to_int8(_copy(fp32), str(cfg.int8.mode), batches, cfg.int8.per_channel)
            else:
                proto = _copy(fp32)
            file_meta = dataclasses.replace(meta, precision=precision, batch=n if static else 0,
                                            encoding="fused" if fused else model.cfg.encoding)
            path = save_checked(set_metadata(proto, file_meta), out_dir / variant_filename(precision, static))
            paths[(precision, static)] = path
            log.info("wrote %s (%d bytes)", path, path.stat().st_size)
    return paths


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def _fit(rays_o: np.ndarray, rays_d: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Repeat or cut a calibration batch to exactly ``n`` rays (static-shape models)."""
    idx = np.arange(n) % rays_o.shape[0]
    return rays_o[idx], rays_d[idx]


@locked_run("export", lambda cfg: cfg.out_dir or Path(cfg.run_dir) / "export")
def run(cfg: ExportConfig) -> dict[str, Any]:
    """Export, check and measure; returns the content of ``export.json``.

    Holds ``<out_dir>/.export.lock`` while it runs (:mod:`pipeline.runlock`).

    Raises:
        UserError: missing/corrupt checkpoint, a scene that does not match it, bad settings, or another
            live export into the same folder.
        RuntimeError: the fp32 graph disagrees with PyTorch beyond ``parity.fp32_tol`` (nothing is
            published; the report goes to ``export_failed.json``).
    """
    seed_everything(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    ckpt = Path(cfg.checkpoint or Path(cfg.run_dir) / "student" / "student.ckpt")
    out_dir = Path(cfg.out_dir or Path(cfg.run_dir) / "export")
    model, facts = load_student(ckpt)
    cfg = for_decoder(cfg, model_config(model).decoder, str(ckpt))
    ckpt_sha256 = sha256_file(ckpt)  # provenance: in every file's metadata and in export.json
    scene = load_scene(cfg.scene, splits=("train", "test"))
    _check_inputs(cfg, facts, scene, ckpt, model_config(model).encoding)
    meta = dataclasses.replace(build_meta(model, facts_with_rig(facts, scene), cfg.opset),
                               checkpoint_sha256=ckpt_sha256)
    staging = _staging_dir(out_dir)
    if isinstance(model, ImageStudent):
        log.info("%s: an image model: no static-batch, fused-encoding or split (page) files, which are for "
                 "ray models", ckpt)
        files = write_image_variants(cfg, model, meta, scene.split("train"), staging)
        report = image_report(cfg, model, meta, scene, files, gen)
        paths = [f.path for f in files]
    else:
        ray_paths = _write_variants(cfg, model, meta, scene, staging, gen)
        report = _parity_report(cfg, model, meta, scene, ray_paths, gen)
        paths = list(ray_paths.values())
    report.update({
        "format": FORMAT, "format_version": FORMAT_VERSION, "opset": cfg.opset, "checkpoint": str(ckpt),
        "checkpoint_sha256": ckpt_sha256, "scene": meta.scene_name, "image_size": meta.image_size,
        "student": meta.student, "flops_per_ray": meta.flops_per_ray, "int8_mode": cfg.int8.mode,
        "decoder": meta.decoder,
    })
    fp32_bytes = report["variants"][Path(variant_filename("fp32", False)).stem]["bytes"]
    report["size"] = {"fp32_bytes": fp32_bytes, "device_limit_bytes": DEVICE_LIMIT_BYTES,
                      "fits_device_limit": fp32_bytes <= DEVICE_LIMIT_BYTES}
    if fp32_bytes > DEVICE_LIMIT_BYTES:
        log.warning("%s is %d bytes, over the %d-byte budget for devices", variant_filename("fp32", False),
                    fp32_bytes, DEVICE_LIMIT_BYTES)
    if not report["parity"]["ok"]:
        shutil.rmtree(staging)
        write_json(out_dir / FAILED_REPORT_NAME, report)
        raise RuntimeError(f"ONNX fp32 disagrees with PyTorch: max abs error "
                           f"{report['parity']['fp32_max_abs_err']:.3g} > {cfg.parity.fp32_tol:g}; nothing "
                           f"published (see {out_dir / FAILED_REPORT_NAME})")
    _publish(staging, [p for p in paths if p.stem in report["variants"]], out_dir, report)
    return report


def _staging_dir(out_dir: Path) -> Path:
    """A fresh hidden folder inside ``out_dir`` for this run's files, after removing those a killed or
    failed run left (the export run's lock keeps two exports out of one folder)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))


def _publish(staging: Path, paths: list[Path], out_dir: Path, report: dict[str, Any]) -> None:
    """Move the checked files ``paths`` from ``staging`` to their names in ``out_dir``, ``export.json``
    last (files left in ``staging``, such as int8 files that failed their gate, go with it).

    The old ``export.json`` goes first, so a kill during these renames leaves a folder without a report
    (visibly incomplete), never a mix of old and new files beside an old report; variant files the new
    report does not list are removed.
    """
    (out_dir / REPORT_NAME).unlink(missing_ok=True)
    (out_dir / FAILED_REPORT_NAME).unlink(missing_ok=True)
    for path in paths:
        os.replace(path, out_dir / path.name)
    listed = {path.name for path in paths}
    for old in out_dir.glob("student*.onnx"):
        if is_variant_file(old.name) and old.name not in listed:
            old.unlink(missing_ok=True)
    write_json(out_dir / REPORT_NAME, report)
    shutil.rmtree(staging)


def _parity_report(cfg: ExportConfig, model: R2LStudent, meta: ModelMeta, scene: Scene,
                   paths: dict[tuple[str, bool], Path], gen: torch.Generator) -> dict[str, Any]:
    """Evaluate every file against PyTorch and the test split's ground truth."""
    test = scene.split("test")
    views = view_rays(test, n_test_views(cfg.parity, test))
    gt = test.rgb(meta.background)[: len(views)].reshape(len(views), -1, 3).numpy()
    rays = scene_rays(scene, torch.tensor(meta.aabb), cfg.parity.n_rays, gen)
    torch_random = torch_rgb(model, *rays).numpy()
    torch_views = np.stack([torch_rgb(model, o, d).numpy() for o, d in tqdm(views, desc="PyTorch views")])
    torch_psnr = mean_view_psnr(torch_views, gt)
    variants: dict[str, dict[str, Any]] = {}
    for path in tqdm(list(paths.values()), desc="checking ONNX files"):
        res = evaluate_variant(path, views, gt, torch_views, rays, torch_random, cfg.threads,
                               cfg.parity.batch_size)
        res["psnr_change_db"] = res["test_psnr"] - torch_psnr
        variants[path.stem] = res
        log.info("%s: test PSNR %.3f dB (%+.3f vs torch), max abs err %.2g", path.name, res["test_psnr"],
                 res["psnr_change_db"], res["max_abs_err_random"])
    fp32 = variants[Path(variant_filename("fp32", False)).stem]
    err = max(fp32["max_abs_err_random"], fp32["max_abs_err_view"])
    parity: dict[str, Any] = {"n_random_rays": cfg.parity.n_rays, "fp32_tol": cfg.parity.fp32_tol,
                              "fp32_max_abs_err": err, "ok": err <= cfg.parity.fp32_tol}
    for precision in _statics(cfg):
        static = variants[Path(variant_filename(precision, True)).stem]
        dynamic = variants.get(Path(variant_filename(precision, False)).stem)
        if dynamic is not None:
            diff = float(np.abs(static["views"] - dynamic["views"]).max())
            parity[f"static_vs_dynamic_max_abs_err_{precision}"] = diff
    for res in variants.values():
        del res["views"]
    return {"n_test_views": len(views), "torch": {"test_psnr": torch_psnr}, "parity": parity,
            "variants": variants}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
@exit_on_user_error
def main(dcfg: DictConfig) -> None:
    """Hydra entry point: ``python -m export.onnx [overrides]``."""
    report = run(to_dataclass(dcfg, ExportConfig))
    print(f"{'file':<28} {'bytes':>10} {'test PSNR':>10} {'vs torch':>9} {'max err':>9} {'ms/frame':>9}")
    for res in report["variants"].values():
        print(f"{res['file']:<28} {res['bytes']:>10} {_fmt(res['test_psnr'], '.3f'):>10} "
              f"{_fmt(res['psnr_change_db'], '+.3f'):>9} {res['max_abs_err_random']:>9.2g} "
              f"{res['ms_per_frame']:>9.1f}")
    print(f"torch student test PSNR {report['torch']['test_psnr']:.3f} dB on {report['n_test_views']} views; "
          f"fp32 parity max abs err {report['parity']['fp32_max_abs_err']:.2g} (ok={report['parity']['ok']})")


if __name__ == "__main__":
    check_command_line("export")
    main()
