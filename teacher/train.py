"""Train the Instant-NGP teacher on a scene and evaluate it: ``python -m teacher.train [overrides]``.

Outputs under ``<run_dir>/teacher/``: ``teacher.ckpt`` (the trained model, written once training is
done), ``lightning/last.ckpt`` (resume point while training), ``logs/`` (CSV) and ``tb/``
(TensorBoard), ``metrics.json`` and ``renders/`` (test views as ground truth | prediction | error).

Rerunning after a kill resumes from ``last.ckpt`` (the time budget counts across runs); rerunning a
finished run re-evaluates ``teacher.ckpt`` if ``metrics.json`` is missing, else reports it. Both record
what they were made from (the scene's cameras and image list, the settings that shape the weights:
``teacher.ckpt``'s ``provenance`` entry and ``provenance.json``); a rerun with another scene or such
settings is refused in one line instead of reusing them (budgets may change: :func:`teacher_provenance`).
``last.ckpt`` is written atomically beside itself; an unreadable one is moved aside with a warning and
training starts fresh (:mod:`training.checkpoints`). A second job on one run folder is refused in one
line (:mod:`pipeline.runlock`).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig

from core.checkpoint import check_state_shapes
from core.errors import CheckpointError, exit_on_user_error
from core.io import sha256_file, write_json
from pipeline.config import check_command_line, to_dataclass, to_plain
from pipeline.provenance import check_or_record
from pipeline.run import apply_threads, resolve_device
from pipeline.runlock import locked_run
from pipeline.seeding import seed_everything
from scenes.load import Scene, SceneSplit, load_scene
from teacher.checkpoint import load_teacher, save_teacher
from teacher.config import TeacherConfig, teacher_provenance
from teacher.data import RayDataModule
from teacher.evaluate import evaluate
from teacher.lit_module import TeacherLitModule
from teacher.model import Teacher, build_teacher
from training.budget import TrainingBudget
from training.checkpoints import resume_checkpoint
from training.distributed import env_world_size
from training.trainer import build_trainer

log = logging.getLogger(__name__)


def train_teacher(cfg: TeacherConfig, teacher: Teacher, scene_split: SceneSplit, out: Path,
                  extra_callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Fit ``teacher`` with Lightning (resuming from ``out/lightning/last.ckpt`` if present).

    Args:
        cfg: stage config.
        teacher: the model (trained in place).
        scene_split: training views.
        out: the stage's output folder.
        extra_callbacks: more callbacks; one with a ``budget`` attribute receives the
            :class:`TrainingBudget` (benchmarks use it to evaluate along the way).

    Returns:
        ``{"steps", "train_seconds", "samples"}``.
    """
    seconds, distortion = cfg.train.max_seconds, 0.0
    if teacher.ndc is not None:
        seconds = seconds * cfg.forward.seconds_factor if seconds is not None else None
        distortion = cfg.forward.distortion
        log.info("forward-facing scene: training budget %s s (forward.seconds_factor x train.max_seconds), "
                 "distortion loss weight %g (forward.distortion)", seconds, distortion)
    budget = TrainingBudget(seconds, cfg.train.max_steps)
    lit = TeacherLitModule(teacher, cfg.optim, budget.progress, distortion, cfg.forward.distortion_start)
    data = RayDataModule(scene_split, cfg.train.batch_rays, cfg.seed)
    for callback in extra_callbacks or []:
        if hasattr(callback, "budget"):
            callback.budget = budget
    ckpt_dir = out / "lightning"
    trainer = build_trainer(
        out, budget, ckpt_dir, {"train_time_interval": timedelta(seconds=cfg.train.checkpoint_seconds)},
        csv_logs=(out, "logs"), tb_logs=(out, "tb"), accelerator=teacher.aabb.device.type, devices=1,
        log_every=cfg.train.log_every, progress_bar=cfg.train.progress_bar, callbacks=extra_callbacks or [],
        limit_val_batches=0,
    )
    resume = resume_checkpoint(ckpt_dir / "last.ckpt")
    if resume is not None:
        check_state_shapes(resume, lit.state_dict(), "a teacher of another shape",
                           f"delete {out} or use another run_dir")
        log.info("resuming from %s", resume)
    with warnings.catch_warnings():
        # an endless iterable dataset cannot be resumed mid-epoch by Lightning; ours resumes itself
        warnings.filterwarnings("ignore", message=".*not fully resumable.*")
        trainer.fit(lit, datamodule=data, ckpt_path=str(resume) if resume is not None else None,
                    weights_only=True)
    return {"steps": int(trainer.global_step), "train_seconds": round(budget.elapsed, 2),
            "samples": lit.samples_seen}


def new_teacher(cfg: TeacherConfig, scene: Scene, device: torch.device | str = "cpu") -> Teacher:
    """An untrained teacher for ``scene`` (occupancy carved by the training masks if configured and the
    views have masks)."""
    teacher = build_teacher(cfg.model, scene.aabb, scene.near, scene.far, device, scene.ndc)
    train = scene.split("train")
    if cfg.model.occupancy.carve and not train.has_masks:
        log.info("no alpha masks in the training views: occupancy carving off")
    elif cfg.model.occupancy.carve:
        kept = teacher.carve_occupancy(train.c2w, train.K, train.images[..., 3])
        log.info("occupancy grid carved by the training masks: %.1f%% of cells kept", 100 * kept)
    return teacher


@locked_run("teacher", lambda cfg: Path(cfg.run_dir) / "teacher")
def run(cfg: TeacherConfig) -> dict[str, Any]:
    """Train (or resume) and evaluate the teacher; returns the metrics written to ``metrics.json``.

    Holds ``<run_dir>/teacher/.teacher.lock`` (:mod:`pipeline.runlock`; rank 0 of a NeRF-XL job) while it
    runs.

    Raises:
        CheckpointError: ``teacher.ckpt`` or ``last.ckpt`` was made from another scene or other settings
            (:func:`teacher_provenance`).
        UserError: another live job trains the teacher of this run folder.
    """
    if cfg.distributed.partitions > 1 or env_world_size() > 1:  # NeRF-XL (teacher.xl.train)
        from teacher.xl.train import run_partitioned

        return run_partitioned(cfg)
    out = Path(cfg.run_dir) / "teacher"
    ckpt_path, metrics_path = out / "teacher.ckpt", out / "metrics.json"
    seed_everything(cfg.seed)
    apply_threads(cfg.threads)
    scene = load_scene(cfg.scene, splits=("train", "test"))
    provenance = teacher_provenance(cfg, scene)
    check_or_record(out, provenance, [ckpt_path, out / "lightning" / "last.ckpt"],
                    f"delete {out} or use another run_dir")
    if ckpt_path.is_file() and metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("checkpoint_sha256") == sha256_file(ckpt_path):
            log.info("teacher already trained and evaluated: %s", metrics_path)
            return metrics
    device = resolve_device(cfg.device)
    if ckpt_path.is_file():
        log.info("training already finished; evaluating %s", ckpt_path)
        loaded = load_teacher(ckpt_path, device=device, backend=cfg.model.field.grid.backend)
        if not isinstance(loaded, Teacher):  # the provenance check above refuses this first
            raise CheckpointError(f"{ckpt_path}: holds a partitioned teacher; set distributed.partitions")
        teacher = loaded
        extra = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        stats = {k: extra.get(k, 0) for k in ("steps", "train_seconds", "samples")}
    else:
        teacher = new_teacher(cfg, scene, device)
        stats = train_teacher(cfg, teacher, scene.split("train"), out)
        save_teacher(ckpt_path, teacher, provenance=provenance, **stats)
    start = time.perf_counter()
    test = evaluate(teacher, scene.split("test"), scene.background, cfg.eval.chunk, cfg.eval.n_renders,
                    out / "renders", cfg.eval.progress_bar)
    eval_seconds = time.perf_counter() - start
    metrics = {
        "test": test,
        **stats,
        "eval_seconds": round(eval_seconds, 2),
        "steps_per_second": round(stats["steps"] / max(stats["train_seconds"], 1e-9), 3),
        "backend": teacher.backend,
        "scene": scene.name,
        "n_params": sum(p.numel() for p in teacher.parameters()),
        "occupied_fraction": teacher.occupancy.occupancy_fraction(),
        "checkpoint_sha256": sha256_file(ckpt_path),
        "config": to_plain(cfg),
    }
    write_json(metrics_path, metrics)
    log.info("teacher: test PSNR %.2f dB after %d steps / %.0f s -> %s", test["psnr"], stats["steps"],
             stats["train_seconds"], metrics_path)
    return metrics


@hydra.main(config_path="../conf", config_name="teacher", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    metrics = run(to_dataclass(cfg, TeacherConfig))
    print(f"test PSNR {metrics['test']['psnr']:.2f} dB, SSIM {metrics['test']['ssim']:.4f}, "
          f"{metrics['steps']} steps in {metrics['train_seconds']:.0f} s ({metrics['backend']} backend)")


if __name__ == "__main__":
    check_command_line("teacher")
    main()
