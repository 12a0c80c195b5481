"""Fault cases: outputs reused on a rerun only when they were made from the same inputs (provenance).

A stage records what it made each output from (:mod:`pipeline.provenance`); a rerun with other inputs must
refuse in one line naming the file, a rerun with the same inputs must reuse it. Also: data generation
resumes after the teacher was only re-evaluated, refuses a partitioned teacher whose training has not
finished, and the partitioned teacher resumes across launch modes. Tiny configs: a few seconds each.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from core.errors import UserError
from testing.faults.harness import FaultCase, Outcome
from testing.runs import TINY_TEACHER, run_ranks, write_photo_pseudo
from testing.scenes.objects import write_object_scene

# the tests' tiny teacher, smaller still: many runs of it
TEACHER = [
    *TINY_TEACHER, "model.field.grid.n_levels=2", "model.field.grid.log2_hashmap_size=8",
    "model.field.grid.base_resolution=4", "model.field.grid.max_resolution=16", "model.field.hidden_dim=16",
    "model.field.geo_dim=8", "model.field.grid.backend=torch", "model.occupancy.resolution=8",
    "model.occupancy.update_every=2", "model.occupancy.warmup_steps=2", "model.occupancy.carve=false",
    "model.render.steps_per_diagonal=32", "train.batch_rays=64", "train.max_seconds=null",
    "train.checkpoint_seconds=0.01", "eval.n_renders=0", "optim.decay_start=1.0",
]
STUDENT = [
    "model.depth=4", "model.width=16", "model.n_points=4", "model.n_freqs=2", "model.encoding=pe",
    "train.num_workers=0", "train.shuffle_buffer=256", "train.progress_bar=false",
    "train.distill.max_steps=4", "train.distill.batch_size=64", "train.distill.warmup_steps=1",
    "train.distill.val_every_steps=4", "train.finetune.enabled=false", "train.ckpt_every_steps=2",
    "train.precision=fp32", "eval.chunk=256", "eval.save_renders=false", "eval.val_views=1",
]


def _scene(root: Path, seed: int = 3) -> Path:
    """A 16 px procedural object scene (8 training views); another ``seed`` moves its cameras."""
    return write_object_scene(root, size=16, n_views={"train": 8, "val": 1, "test": 2}, seed=seed)


def _teacher_cfg(scene: Path, run_dir: Path, *overrides: str) -> Any:
    from pipeline.config import to_dataclass
    from teacher.config import TeacherConfig
    from testing.stages import compose

    cfg = compose("teacher", [*TEACHER, f"scene.path={scene}", f"run_dir={run_dir}", *overrides])
    return to_dataclass(cfg, TeacherConfig)


@functools.cache
def _trained_teacher() -> Path:
    """A folder with ``scene/`` and ``run/teacher/`` (2 steps), trained once per process and copied."""
    from teacher.train import run

    root = Path(tempfile.mkdtemp(prefix="fault_teacher_"))
    atexit.register(shutil.rmtree, root, True)
    run(_teacher_cfg(_scene(root / "scene"), root / "run"))
    return root


def _copy_teacher(tmp: Path) -> tuple[Path, Path]:
    """``(scene, run_dir)`` of a copy of the trained teacher in ``tmp``."""
    shutil.copytree(_trained_teacher(), tmp, dirs_exist_ok=True)
    return tmp / "scene", tmp / "run"


def _refusal(call: Any, *needles: str) -> Outcome:
    """Run ``call``; a one-line :class:`UserError` containing every needle is the acceptable answer."""
    try:
        call()
    except UserError as exc:
        line = str(exc)
        ok = "\n" not in line and all(n in line for n in needles)
        return Outcome("one-line error", ok, line)
    return Outcome("accepted", False, "no error: the stale output was used")


def teacher_other_scene(tmp: Path) -> Outcome:
    """A teacher.ckpt trained on one scene, rerun with another scene in the same run_dir."""
    from teacher.train import run

    _, run_dir = _copy_teacher(tmp)
    other = _scene(tmp / "other", seed=4)
    return _refusal(lambda: run(_teacher_cfg(other, run_dir)), "teacher.ckpt", "scene.cameras_sha256",
                    "delete")


def teacher_other_settings(tmp: Path) -> Outcome:
    """A teacher.ckpt rerun with another learning rate: refused, not reported as if it were trained so."""
    from teacher.train import run

    scene, run_dir = _copy_teacher(tmp)
    return _refusal(lambda: run(_teacher_cfg(scene, run_dir, "optim.lr=0.05")), "teacher.ckpt", "optim.lr")


def teacher_same_inputs(tmp: Path) -> Outcome:
    """Rerun with the same scene and model but other budgets and evaluation settings: reused as it is."""
    from core.io import sha256_file
    from pipeline.provenance import embedded_provenance
    from scenes.load import load_scene
    from teacher.train import run, teacher_provenance

    scene, run_dir = _copy_teacher(tmp)
    ckpt = run_dir / "teacher" / "teacher.ckpt"
    before = sha256_file(ckpt)
    cfg = _teacher_cfg(scene, run_dir, "train.max_steps=50", "eval.n_renders=1", "device=cpu",
                       "model.render.chunk=512")
    metrics = run(cfg)
    recorded = embedded_provenance(ckpt)
    same = recorded == teacher_provenance(cfg, load_scene(cfg.scene, splits=("train",)))
    ok = sha256_file(ckpt) == before and metrics["steps"] == 2 and same
    return Outcome("reused", ok, f"steps {metrics['steps']}, checkpoint sha256 unchanged, provenance "
                                 f"recorded: {same}")


def teacher_changed_shape(tmp: Path) -> Outcome:
    """Killed during training (only last.ckpt left), rerun with a wider MLP: one line, not a RuntimeError;
    also for a run of an older version (no provenance.json)."""
    from teacher.train import run

    scene, run_dir = _copy_teacher(tmp)
    out = run_dir / "teacher"
    for name in ("teacher.ckpt", "metrics.json"):
        (out / name).unlink()
    wider = _teacher_cfg(scene, run_dir, "model.field.hidden_dim=32")
    first = _refusal(lambda: run(wider), "last.ckpt", "model.field.hidden_dim")
    (out / "provenance.json").unlink()
    legacy = _refusal(lambda: run(wider), "last.ckpt", "another shape")
    return Outcome("one-line error", first.ok and legacy.ok, f"{first.detail} | {legacy.detail}")


def student_after_new_shards(tmp: Path) -> Outcome:
    """stage_distill.ckpt (and, after a kill, last.ckpt) of old shards, rerun after the shards changed."""
    from pipeline.config import to_dataclass
    from student.config import StudentConfig
    from student.train import run
    from testing.stages import compose

    scene, run_dir = _scene(tmp / "scene"), tmp / "run"
    write_photo_pseudo(run_dir / "pseudo", scene, counts=(4, 4))

    def cfg() -> StudentConfig:
        return to_dataclass(compose("student", [*STUDENT, f"scene.path={scene}", f"run_dir={run_dir}"]),
                            StudentConfig)

    run(cfg())
    shutil.rmtree(run_dir / "pseudo")
    write_photo_pseudo(run_dir / "pseudo", scene, (0.0, 0.0, 0.0), (4, 4))  # rerun with another background
    stage = _refusal(lambda: run(cfg()), "stage_distill.ckpt", "pseudo_sha256", "delete")
    (run_dir / "student" / "stage_distill.ckpt").unlink()  # as if killed before the stage ended
    last = _refusal(lambda: run(cfg()), "last.ckpt", "pseudo_sha256")
    return Outcome("one-line error", stage.ok and last.ok, f"{stage.detail} | {last.detail}")


def export_after_new_checkpoint(tmp: Path) -> Outcome:
    """Export, retrain the student (another student.ckpt), export again: the files are made anew and
    carry the new checkpoint's sha256 in their metadata and in export.json."""
    import onnx

    from core.io import sha256_file
    from export.onnx import ExportConfig, ParityConfig
    from export.onnx import run as export
    from scenes.load import SceneConfig, load_scene
    from student.build import scene_meta
    from student.checkpoint import save_student
    from student.model import R2LStudent, StudentModelConfig

    scene_dir = _scene(tmp / "scene")
    scene = load_scene(SceneConfig(path=str(scene_dir)), splits=("train", "test"))
    ckpt = tmp / "run" / "student" / "student.ckpt"
    cfg = ExportConfig(scene=SceneConfig(path=str(scene_dir)), run_dir=str(tmp / "run"), variants=["fp32"],
                       static_variants=[], fused_encoding=[],
                       parity=ParityConfig(n_rays=64, max_test_views=1))
    shas = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = R2LStudent(StudentModelConfig(encoding="pe", n_points=4, n_freqs=2, width=16, depth=4),
                           scene.aabb, scene.near, scene.far)
        save_student(ckpt, model, scene_meta(scene, model, [1.0, 1.0, 1.0], None))
        report = export(cfg)
        proto = onnx.load(str(tmp / "run" / "export" / "student.onnx"))
        props = {p.key: p.value for p in proto.metadata_props}
        shas.append((sha256_file(ckpt), report["checkpoint_sha256"],
                     json.loads(props.get("lightfield.checkpoint_sha256", "null"))))
    ok = shas[0][0] != shas[1][0] and all(a == b == c for a, b, c in shas)
    return Outcome("re-exported", ok, f"checkpoint {shas[1][0][:12]}: export.json {shas[1][1][:12]}, "
                                      f"ONNX metadata {str(shas[1][2])[:12]}")


def _data_gen_cfg(scene: Path, run_dir: Path, *overrides: str) -> Any:
    from data_gen.render import DataGenConfig
    from pipeline.config import to_dataclass
    from testing.stages import compose

    overrides = (f"scene.path={scene}", f"run_dir={run_dir}", "n_views=4", "views_per_shard=2",
                 "backend=torch", "progress=false", "device=cpu", *overrides)
    return to_dataclass(compose("data_gen", list(overrides)), DataGenConfig)


def data_gen_after_reevaluation(tmp: Path) -> Outcome:
    """Half the shards rendered, then the teacher re-evaluated (metrics.json rewritten, checkpoint the
    same): the rerun resumes instead of calling the folder another job's."""
    from data_gen.render import run

    scene, run_dir = _copy_teacher(tmp)
    first = run(_data_gen_cfg(scene, run_dir, "shards=0:1"))
    metrics = run_dir / "teacher" / "metrics.json"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "test": {"psnr": 99.0}}))
    second = run(_data_gen_cfg(scene, run_dir))
    ok = first["written"] == 2 and second["skipped"] == 2 and second["written"] == 2 and second["complete"]
    return Outcome("exact resume", ok, f"first run {first['written']} views; after the re-evaluation "
                                       f"{second['skipped']} skipped, {second['written']} rendered")


def data_gen_unfinished_partitioned(tmp: Path) -> Outcome:
    """The teacher.ckpt a NeRF-XL run writes while training (finished=False) given to data generation."""
    from data_gen.render import run
    from scenes.load import load_scene
    from teacher.checkpoint import save_teacher
    from teacher.xl.model import build_partitioned_teacher

    scene_dir = _scene(tmp / "scene")
    cfg = _teacher_cfg(scene_dir, tmp / "run")
    scene = load_scene(cfg.scene, splits=("train",))
    mid = (scene.aabb[0] + scene.aabb[3]) / 2
    boxes = torch.stack([scene.aabb.clone(), scene.aabb.clone()])
    boxes[0, 3], boxes[1, 0] = mid, mid
    teacher = build_partitioned_teacher(cfg.model, boxes, scene.aabb, scene.near, scene.far)
    save_teacher(tmp / "run" / "teacher" / "teacher.ckpt", teacher, step=3, finished=False)
    return _refusal(lambda: run(_data_gen_cfg(scene_dir, tmp / "run")), "teacher.ckpt", "not finished")


def partitioned_resume_across_launch_modes(tmp: Path) -> Outcome:
    """NeRF-XL: 2 steps in one process, stopped, resumed to 4 steps by 2 torchrun ranks: the same weights
    as 4 steps without a stop (the optimizer state is saved per region, whoever held it)."""
    from teacher.train import run

    scene = _scene(tmp / "scene")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # multi-threaded CPU scatter-adds vary in the last bit
    try:
        run(_teacher_cfg(scene, tmp / "straight", "distributed.partitions=2", "train.max_steps=4"))
        run(_teacher_cfg(scene, tmp / "resumed", "distributed.partitions=2"))
        run_ranks(_teacher_cfg(scene, tmp / "resumed", "distributed.partitions=2", "train.max_steps=4"))
    finally:
        torch.set_num_threads(threads)
    a, b = (torch.load(tmp / r / "teacher" / "teacher.ckpt", weights_only=True)
            for r in ("straight", "resumed"))
    sa, sb = a["state_dict"], b["state_dict"]
    worst = max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)
    ok = a["step"] == b["step"] == 4 and worst < 1e-5
    return Outcome("exact resume", ok, f"step {b['step']}, max weight difference {worst:.2g} to an "
                                       "uninterrupted run")


CASES = [
    FaultCase("teacher", "stale file", "teacher.ckpt of another scene, rerun in the same run_dir",
              teacher_other_scene),
    FaultCase("teacher", "stale file", "teacher.ckpt rerun with another optim.lr", teacher_other_settings),
    FaultCase("teacher", "stale file", "rerun with the same inputs, other budgets and eval settings",
              teacher_same_inputs),
    FaultCase("teacher", "stale file", "last.ckpt after a kill, rerun with another model.field.hidden_dim",
              teacher_changed_shape),
    FaultCase("student", "stale file", "stage_distill.ckpt / last.ckpt after the shards changed",
              student_after_new_shards),
    FaultCase("export", "stale file", "export rerun after student.ckpt changed", export_after_new_checkpoint),
    FaultCase("data_gen", "stale file", "resume after the teacher's metrics.json was rewritten",
              data_gen_after_reevaluation),
    FaultCase("data_gen", "stale file", "unfinished partitioned teacher.ckpt (finished=False)",
              data_gen_unfinished_partitioned),
    FaultCase("teacher (NeRF-XL)", "kill", "stopped in one process, resumed by 2 torchrun ranks",
              partitioned_resume_across_launch_modes, multiprocess=True),
]
