"""``python -m student.train``: distill the teacher's pseudo-data into the student, then fine-tune.

Stage ``distill`` trains on ``<run_dir>/pseudo`` shards; stage ``finetune`` on the scene's real training
photos (composited on the pseudo-data's background) with a lower learning rate. ``model.decoder`` picks the
student: ``ray`` (R2L, one network evaluation a pixel: ray batches, :mod:`student.data`) or ``image``
(camera in, image out: random crops of whole views, :mod:`student.image_data`, :mod:`student.image_lit`).
Each stage checkpoints with Lightning and resumes after a kill; a finished stage is skipped on re-run.
The per-stage ``ckpt/<stage>/last.ckpt`` is written atomically beside itself; an unreadable one is moved
aside with a warning and that stage starts fresh (:mod:`training.checkpoints`). A second job on the same
run folder is refused in one line (``student/.student.lock``, :mod:`pipeline.runlock`). Outputs go
to ``<run_dir>/student/`` (``student.ckpt``, ``metrics.json``, ``renders/``, ``logs/``); the run's report
is the pipeline's last step (``python -m report``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig

from core.errors import UserError, exit_on_user_error
from core.io import read_json, write_json
from core.shards import PseudoMeta, read_meta
from pipeline.config import check_command_line, to_dataclass
from pipeline.provenance import check_or_record
from pipeline.run import apply_threads, lightning_accelerator
from pipeline.runlock import locked_run
from pipeline.seeding import seed_everything
from scenes.load import Scene, load_scene
from student.build import build_student, ray_spacing_note, scene_meta
from student.checkpoint import Student, load_student, model_config, save_student
from student.config import PRECISIONS, StageConfig, StudentConfig, for_scene
from student.data import (
    ContentRays,
    PhotoDataModule,
    RayBatch,
    ShardDataModule,
    photo_rays,
    ray_bytes,
    unpack_rays,
    view_to_rays,
)
from student.evaluate import evaluate_split, image_frame_cost, save_side_by_side, teacher_test_predictions
from student.image_data import CropDataModule, photo_views, pseudo_views, validation_views
from student.image_lit import ImageLitModule
from student.image_model import ImageStudent
from student.lit_module import StageLitModule, StudentLitModule
from student.model import AUTO, flops_per_ray, lookups_per_ray, table_params
from student.reuse import check_resume, check_same_model, stage_provenance
from training.budget import TrainingBudget
from training.checkpoints import resume_checkpoint
from training.trainer import build_trainer as shell_trainer

log = logging.getLogger(__name__)

STAGES = ("distill", "finetune")


def validation_batches(scene: Scene, background: list[float], n_views: int, chunk: int) -> list[RayBatch]:
    """Rays of the first ``n_views`` test views in chunks (the quick validation during training)."""
    views = scene.split("test")
    rgb = views.rgb(background)
    n = min(n_views, views.n_views)
    packed = torch.cat([view_to_rays(rgb[i], views.c2w[i], views.K[i]) for i in range(n)])
    return [unpack_rays(p) for p in packed.split(chunk)]


def _resume_step(ckpt: Path) -> int:
    """Step of a stage's ``last.ckpt`` (0: none). The first reader of it, so an unreadable one is moved
    aside here with a warning and the stage starts fresh (:func:`training.checkpoints.resume_checkpoint`)."""
    if resume_checkpoint(ckpt) is None:
        return 0
    return int(torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))


def _lightning_devices(cfg: StudentConfig) -> int | list[int]:
    """``train.devices`` processes, or the one GPU that ``device=cuda:N`` names."""
    if cfg.device.startswith("cuda:") and cfg.train.devices == 1:  # validated: cuda:N
        return [int(cfg.device.split(":")[1])]
    return cfg.train.devices


def build_trainer(cfg: StudentConfig, stage: StageConfig, name: str, out: Path, budget: TrainingBudget
                  ) -> L.Trainer:
    """A Trainer for one stage (:func:`training.trainer.build_trainer`): the stage's budget, precision, DDP,
    validation cadence, CSV + TensorBoard logs under ``logs/``, ``ckpt/<stage>/last.ckpt``."""
    if cfg.train.precision not in PRECISIONS:
        raise UserError(f"train.precision must be one of {sorted(PRECISIONS)}, got {cfg.train.precision!r}")
    logs = out / "logs"
    return shell_trainer(
        out, budget, out / "ckpt" / name, {"every_n_train_steps": cfg.train.ckpt_every_steps},
        csv_logs=(logs / "csv", name), tb_logs=(logs / "tb", name),
        accelerator=lightning_accelerator(cfg.device), devices=_lightning_devices(cfg), log_every=10,
        progress_bar=cfg.train.progress_bar,
        num_nodes=cfg.train.num_nodes,
        strategy="ddp" if cfg.train.devices * cfg.train.num_nodes > 1 else "auto",
        precision=PRECISIONS[cfg.train.precision],
        val_check_interval=stage.val_every_steps,
        check_val_every_n_epoch=None,
    )


def run_stage(cfg: StudentConfig, name: str, model: Student, datamodule: L.LightningDataModule,
              out: Path, provenance: dict[str, Any] | None = None) -> tuple[L.Trainer, dict[str, Any]]:
    """Fit one stage (resuming from its ``last.ckpt`` if present); returns the trainer and its stats.

    ``provenance`` (:func:`student.reuse.stage_provenance`) is compared with the one recorded beside
    ``last.ckpt`` before resuming from it, and recorded there for the next run (``None``: neither).
    """
    stage: StageConfig = getattr(cfg.train, name)
    last = out / "ckpt" / name / "last.ckpt"
    ckpt_path = str(last) if cfg.train.resume and last.is_file() else None
    if ckpt_path:  # refused before the Trainer (it logs) and the data (it loads in train_dataloader)
        check_resume(last, model, cfg.model)
        log.info("%s: resuming from %s", name, ckpt_path)
    if provenance is not None:
        check_or_record(last.parent, provenance, [last] if ckpt_path else [], _fresh(out))
    budget = TrainingBudget(stage.max_seconds, stage.max_steps)
    trainer = build_trainer(cfg, stage, name, out, budget)
    lit: StageLitModule
    if isinstance(model, ImageStudent):
        lit = ImageLitModule(model, stage, name=f"student {name}", time_fraction=budget.seconds_fraction,
                             depth_weight=cfg.train.crops.depth_weight)
    else:
        lit = StudentLitModule(model, stage, cfg.train.hard_mining if name == "distill" else None,
                               name=f"student {name}", time_fraction=budget.seconds_fraction)
    start = time.perf_counter()
    trainer.fit(lit, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    seconds = time.perf_counter() - start
    per_second = trainer.global_step * trainer.world_size / max(seconds, 1e-9)
    if isinstance(datamodule, CropDataModule):
        grid = datamodule.crop_grid()
        pixels = cfg.train.crops.per_step * grid.rows * grid.cols * grid.scale ** 2
        speed = {"steps_per_second": round(per_second / trainer.world_size, 2),
                 "pixels_per_second": round(per_second * pixels)}
    else:
        speed = {"rays_per_second": round(per_second * stage.batch_size)}
    stats = {
        "steps": int(trainer.global_step),
        "seconds": round(seconds, 2),
        **speed,
        "train_loss": float(trainer.callback_metrics.get("train/loss", float("nan"))),
        "resumed": ckpt_path is not None,
    }
    return trainer, stats


def _stage_datamodule(cfg: StudentConfig, name: str, model: Student, meta: PseudoMeta | None, scene: Scene,
                      background: list[float], val: list[RayBatch], out: Path) -> L.LightningDataModule:
    stage: StageConfig = getattr(cfg.train, name)
    seed = cfg.seed + 7919 * _resume_step(out / "ckpt" / name / "last.ckpt")  # fresh stream on resume
    if isinstance(model, ImageStudent):
        if name == "distill":
            assert meta is not None
            return CropDataModule(partial(pseudo_views, meta), meta.image_size, cfg.train.crops,
                                  model.cfg.scale, seed, val)
        load = partial(photo_views, scene, background)
        return CropDataModule(load, scene.split("train").hw, cfg.train.crops, model.cfg.scale, seed, val)
    enc = model.encoder
    keep = ContentRays.of(enc) if enc.ndc is None else None  # NDC: no miss
    if name == "distill":
        assert meta is not None
        cache = ray_bytes(meta) <= cfg.train.ray_cache_gb * 2**30
        return ShardDataModule(meta, stage.batch_size, cfg.train.shuffle_buffer, cfg.train.num_workers, seed,
                               val, cache=cache, keep=keep)
    return PhotoDataModule(photo_rays(scene, background, "train", keep), stage.batch_size, seed, val)


def load_inputs(cfg: StudentConfig) -> tuple[PseudoMeta | None, Scene, list[float]]:
    """Pseudo-data meta (if distilling), the scene, and the background both stages composite on.

    Raises:
        UserError: missing/invalid shards or a scene whose camera convention differs from the shards'.
    """
    meta = None
    if cfg.train.distill.enabled:
        meta = read_meta(Path(cfg.pseudo_dir) if cfg.pseudo_dir else Path(cfg.run_dir) / "pseudo",
                         verify_hashes=True)  # a truncated shard would fail deep inside webdataset
    scene = load_scene(cfg.scene, splits=("train", "test"))
    if meta is not None and scene.convention != meta.scene.camera_convention:
        raise UserError(f"{meta.folder}/meta.json: camera convention {meta.scene.camera_convention!r} "
                        f"differs from the scene's {scene.convention!r}")
    background = list(meta.scene.background) if meta is not None else list(cfg.scene.background)
    return meta, scene, background


def scene_config(cfg: StudentConfig, scene: Scene) -> StudentConfig:
    """``cfg`` as this scene's student uses it (:func:`student.config.for_scene`), saying which decoder
    ``model.decoder=auto`` picked and when the forward group fills in the model."""
    forward = scene.ndc is not None
    used = for_scene(cfg, forward)
    model = used.model
    if cfg.model.decoder == AUTO:
        log.info("model.decoder=auto: the %s student for this %s scene", model.decoder,
                 "forward-facing" if forward else "object")
    if forward and model.decoder == "image":
        log.info("forward-facing scene: the image student takes forward.image_resolutions (%s) in place of "
                 "model.image.resolutions", model.image.resolutions)
    elif forward and (model.grid, model.width) != (cfg.model.grid, cfg.model.width):
        grid = model.grid
        log.info("forward-facing scene: the hash student takes forward.grid (%d levels, 2^%d entries, %d to "
                 "%d cells) and forward.width (%d) in place of model.grid and model.width", grid.n_levels,
                 grid.log2_hashmap_size, grid.base_resolution, grid.max_resolution, model.width)
    if forward and used.train != cfg.train:
        log.info("forward-facing scene: each stage trains forward.seconds_factor (%g) x its max_seconds "
                 "(distill %s s, finetune %s s)", cfg.forward.seconds_factor, used.train.distill.max_seconds,
                 used.train.finetune.max_seconds)
    return used


def _eval_views(cfg: StudentConfig, teacher_metrics: dict[str, Any]) -> int | None:
    if cfg.eval.max_views is not None:
        return cfg.eval.max_views
    return teacher_metrics.get("test", {}).get("n_views")


@locked_run("student", lambda cfg: Path(cfg.run_dir) / "student")
def run(cfg: StudentConfig) -> dict[str, Any]:
    """Train both stages, evaluate, write ``student.ckpt``, ``metrics.json`` and renders.

    Returns:
        The metrics written to ``<run_dir>/student/metrics.json`` (empty on non-zero DDP ranks).

    Raises:
        UserError: another live job trains the student of this run folder (or any bad input).
    """
    apply_threads(cfg.threads)
    seed_everything(cfg.seed)
    out = Path(cfg.run_dir) / "student"
    meta, scene, background = load_inputs(cfg)
    cfg = scene_config(cfg, scene)
    model = build_student(cfg, meta, scene, background)
    note = ray_spacing_note(cfg, meta, scene)
    if note is not None:
        log.warning(note)
    teacher_metrics = read_json(Path(cfg.run_dir) / "teacher" / "metrics.json")
    n_eval = _eval_views(cfg, teacher_metrics)
    cost = model_cost(cfg, model, scene)
    val = (validation_views(scene, background, cfg.eval.val_views) if isinstance(model, ImageStudent)
           else validation_batches(scene, background, cfg.eval.val_views, cfg.eval.chunk))
    stages: dict[str, Any] = {}
    trainer, evaluated, provenance = None, None, None
    for name in STAGES:
        stage: StageConfig = getattr(cfg.train, name)
        done = out / f"stage_{name}.ckpt"
        if not stage.enabled:
            continue
        provenance = stage_provenance(cfg, name, meta, scene, background, provenance)
        if done.is_file() and cfg.train.resume:  # finished before a kill: reuse its weights and metrics
            saved = load_student(done)[0]
            check_same_model(done, model_config(saved), cfg.model)
            check_or_record(out / "ckpt" / name, provenance, [done], _fresh(out), record=False)
            model.load_state_dict(saved.state_dict())
            stages[name] = read_json(out / "metrics.json").get("stages", {}).get(name, {})
            continue
        dm = _stage_datamodule(cfg, name, model, meta, scene, background, val, out)
        trainer, stats = run_stage(cfg, name, model, dm, out, provenance)
        if not trainer.is_global_zero:
            continue
        evaluated = evaluate_split(model, scene.split("test"), background, cfg.eval.chunk, n_eval)
        stats["test"] = evaluated[0]
        stages[name] = stats
        save_student(done, model, scene_meta(scene, model, background, meta), provenance=provenance)
        _write_metrics(out, cfg, cost, stages, teacher_metrics)
        log.info("%s: test PSNR %.2f dB after %d steps", name, stats["test"]["psnr"], stats["steps"])
    if trainer is not None and not trainer.is_global_zero:
        return {}
    if evaluated is None:  # every stage was already done: evaluate the loaded weights
        evaluated = evaluate_split(model, scene.split("test"), background, cfg.eval.chunk, n_eval)
    return finish(cfg, model, scene, background, meta, stages, teacher_metrics, evaluated, cost, provenance)


def _fresh(out: Path) -> str:
    return f"delete {out} or use another run_dir (or train.resume=false to train every stage again)"


def model_cost(cfg: StudentConfig, model: Student, scene: Scene) -> dict[str, Any]:
    """What the student costs to run (``metrics.json`` keys): a ray student's FLOPs and table reads per
    ray, an image student's per frame of the training cameras' size
    (:func:`student.evaluate.image_frame_cost`); both: their parameter count (``n_params``)."""
    n_params = sum(p.numel() for p in model.parameters())
    if isinstance(model, ImageStudent):
        return {**image_frame_cost(model, *scene.split("train").hw), "n_params": n_params}
    return {"flops_per_ray": flops_per_ray(cfg.model), "lookups_per_ray": lookups_per_ray(cfg.model),
            "table_params": table_params(cfg.model), "n_params": n_params}


def _write_metrics(out: Path, cfg: StudentConfig, cost: dict[str, Any], stages: dict[str, Any],
                   teacher_metrics: dict[str, Any], test: dict[str, Any] | None = None) -> dict[str, Any]:
    last = next((stages[s]["test"] for s in reversed(STAGES) if "test" in stages.get(s, {})), None)
    metrics = {
        "test": test or last,
        "stages": stages,
        "teacher_test_psnr": teacher_metrics.get("test", {}).get("psnr"),
        **cost,
        "model": dataclasses.asdict(cfg.model),
        "precision": cfg.train.precision,
        "devices": cfg.train.devices,
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def finish(cfg: StudentConfig, model: Student, scene: Scene, background: list[float],
           meta: PseudoMeta | None, stages: dict[str, Any], teacher_metrics: dict[str, Any],
           evaluated: tuple[dict[str, Any], torch.Tensor, torch.Tensor], cost: dict[str, Any],
           provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Renders, ``student.ckpt`` and ``metrics.json`` from the final test evaluation (``cost``:
    :func:`model_cost`).

    ``student.ckpt`` records ``provenance``: that of the last stage (which chains the earlier ones).
    """
    out = Path(cfg.run_dir) / "student"
    test, pred, gt = evaluated
    sm = scene_meta(scene, model, background, meta)
    save_student(out / "student.ckpt", model, sm, metrics={"test": test}, provenance=provenance)
    teacher = teacher_test_predictions(Path(cfg.run_dir) / "teacher", scene.split("test").files,
                                       scene.split("test").hw)
    if cfg.eval.save_renders:
        save_side_by_side(out / "renders", gt, pred, teacher)
    metrics = _write_metrics(out, cfg, cost, stages, teacher_metrics, test)
    metrics["renders_have_teacher"] = bool(teacher)
    write_json(out / "metrics.json", metrics)
    return metrics


@hydra.main(config_path="../conf", config_name="student", version_base="1.3")
@exit_on_user_error
def main(dcfg: DictConfig) -> None:
    """CLI: ``python -m student.train [overrides]``; prints the student's test metrics."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = to_dataclass(dcfg, StudentConfig)
    metrics = run(cfg)
    if metrics:
        test = metrics["test"]
        print(f"student test PSNR {test['psnr']:.2f} dB, SSIM {test['ssim']:.4f} "
              f"({Path(cfg.run_dir) / 'student' / 'metrics.json'}); the run's report: python -m report")


if __name__ == "__main__":
    check_command_line("student")
    main()
