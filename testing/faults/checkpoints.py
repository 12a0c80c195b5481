"""Fault cases of the resume checkpoints and the run-folder lock (teacher and student).

* SIGKILL during ``last.ckpt`` saves, with ``TMPDIR`` on ``/dev/shm`` (another filesystem: Lightning's
  own writer copied over the good file there), several times, then a rerun that must load and finish;
* a truncated ``last.ckpt``: one warning naming it, a fresh start, no traceback;
* a changed ``train.checkpoint_seconds`` between runs: ``last.ckpt`` stays the resume point (no
  ``last-v1.ckpt``);
* a second live job on a run folder is refused in one line; a lock left by a dead pid is taken over;
* NeRF-XL: SIGKILL of ``torchrun`` and every rank during a region save, then a rerun in one process
  that must end bit-identical to an uninterrupted run.

The commands and configs here (:func:`teacher_cmd`, :func:`student_cfg`, ...) are also those of the
resume tests of ``tests/test_teacher_train.py``, ``tests/test_student_train.py`` and
``tests/test_distributed_train.py``. Every case uses the tiny procedural scene
(:func:`testing.scenes.objects.make_procedural_scene`) and tiny configs: a few seconds each (a
subprocess start costs most of it).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from testing.cli import REPO
from testing.faults.harness import FaultCase, Outcome
from testing.faults.kills import child_env, kill_at_a_save, kill_job_when, partitioned_saving, shm_tmpdir
from testing.runs import TINY_TEACHER, make_photo_pseudo_run
from testing.scenes.objects import make_procedural_scene

# the tests' tiny teacher with a larger table (saves take long enough to be hit), a save every step
TEACHER = [
    *TINY_TEACHER, "model.field.grid.log2_hashmap_size=14", "model.field.grid.backend=torch",
    "model.occupancy.update_every=2", "model.render.steps_per_diagonal=64", "train.batch_rays=128",
    "train.max_seconds=null", "train.checkpoint_seconds=0.001", "eval.n_renders=1", "train.log_every=1",
]
# the student of tests/test_student_train.py, one stage, a checkpoint every step
STUDENT = [
    "model.depth=4", "model.width=32", "model.n_points=8", "model.n_freqs=4", "train.num_workers=0",
    "train.shuffle_buffer=1024", "train.progress_bar=false", "train.distill.batch_size=256",
    "train.distill.warmup_steps=5", "train.distill.val_every_steps=1000", "train.finetune.enabled=false",
    "train.ckpt_every_steps=1", "eval.chunk=128", "eval.save_renders=false",
]
TEACHER_LAST = Path("teacher/lightning/last.ckpt")
STUDENT_LAST = Path("student/ckpt/distill/last.ckpt")


def teacher_cmd(scene: Path, run_dir: Path, steps: int, *extra: str) -> list[str]:
    """``python -m teacher.train`` on ``scene`` with the tiny settings."""
    return [sys.executable, "-m", "teacher.train", f"scene.path={scene}", f"run_dir={run_dir}", *TEACHER,
            f"train.max_steps={steps}", *extra]


def partitioned_cmd(scene: Path, run_dir: Path, steps: int, *extra: str, ranks: int = 2) -> list[str]:
    """``torchrun --standalone --nproc_per_node=ranks -m teacher.train distributed.partitions=ranks`` with
    the tiny settings of :func:`teacher_cmd` (one region per rank, gloo on the CPU)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    return [*torchrun, *teacher_cmd(scene, run_dir, steps, f"distributed.partitions={ranks}", *extra)[1:]]


def student_cmd(scene: Path, run_dir: Path, steps: int, *extra: str) -> list[str]:
    """``python -m student.train`` (distill only) on ``run_dir/pseudo`` with the tiny settings."""
    return [sys.executable, "-m", "student.train", f"scene.path={scene}", f"run_dir={run_dir}",
            f"train.distill.max_steps={steps}", *STUDENT, *extra]


def _kill_loop(tmp: Path, stage: str, kills: int) -> Outcome:
    """``kills`` SIGKILLs during saves, then a rerun (in this process: a start-up less) to the end."""
    scene = make_procedural_scene(tmp / "scene")
    run_dir = tmp / "run"
    if stage == "student":
        make_photo_pseudo_run(run_dir, scene)
    steps = 40 if stage == "teacher" else 60
    last = run_dir / (TEACHER_LAST if stage == "teacher" else STUDENT_LAST)
    cmd = (teacher_cmd if stage == "teacher" else student_cmd)(scene, run_dir, steps)
    done = 0
    with shm_tmpdir() as tmpdir:
        for _ in range(kills):
            done += kill_at_a_save(cmd, last, tmpdir)
    if done == 0:
        return Outcome("never killed", False, f"no save of {last.name} was caught in progress")
    resumed_from = int(torch.load(last, map_location="cpu", weights_only=True)["global_step"])
    if stage == "teacher":
        from teacher.train import run as run_teacher

        end = run_teacher(teacher_cfg(scene, run_dir, steps))["steps"]
    else:
        from student.train import run as run_student

        end = run_student(student_cfg(scene, run_dir, steps))["stages"]["distill"]["steps"]
    return Outcome("resumed and finished", end == steps,
                   f"{done} kills during saves; rerun loaded step {resumed_from}, ended at {end} of {steps}")


def _partitioned_kill(tmp: Path) -> Outcome:
    """NeRF-XL: SIGKILL torchrun and its 2 ranks during a region save, rerun in one process: the same steps
    and bit-identical weights as an uninterrupted run (one thread per process, as torchrun's ranks)."""
    from teacher.train import run as run_teacher

    scene, steps, two = make_procedural_scene(tmp / "scene"), 8, "distributed.partitions=2"
    out = tmp / "killed" / "teacher"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = run_teacher(teacher_cfg(scene, tmp / "straight", steps, two))
        if not kill_job_when(partitioned_cmd(scene, tmp / "killed", steps), partitioned_saving(out)):
            return Outcome("never killed", False, "torchrun ended before its resume files were written")
        saved = int(torch.load(out / "teacher.ckpt", map_location="cpu", weights_only=True)["step"])
        resumed = run_teacher(teacher_cfg(scene, tmp / "killed", steps, two))
    finally:
        torch.set_num_threads(threads)
    a, b = (torch.load(tmp / r / "teacher" / "teacher.ckpt", weights_only=True)["state_dict"]
            for r in ("straight", "killed"))
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ok = same and resumed["steps"] == straight["steps"] == steps and 0 < saved < steps
    return Outcome("exact resume" if ok else "not an exact resume", ok,
                   f"killed with teacher.ckpt at step {saved}; rerun in one process ended at "
                   f"{resumed['steps']} of {steps}, weights {'bit-identical' if same else 'differ'}")


class _Warnings(logging.Handler):
    """Collects the WARNING records of one logger while installed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def warnings_of(name: str) -> Iterator[list[str]]:
    """The warnings logged by logger ``name`` inside the block."""
    handler, logger = _Warnings(), logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def teacher_cfg(scene: Path, run_dir: Path, steps: int, *extra: str) -> Any:
    """The ``TeacherConfig`` of :func:`teacher_cmd` (for a run in this process)."""
    from pipeline.config import to_dataclass
    from teacher.config import TeacherConfig
    from testing.stages import compose

    overrides = teacher_cmd(scene, run_dir, steps, *extra)[3:]  # after python -m teacher.train
    return to_dataclass(compose("teacher", overrides), TeacherConfig)


def student_cfg(scene: Path, run_dir: Path, steps: int, *extra: str) -> Any:
    """The ``StudentConfig`` of :func:`student_cmd` (for a run in this process)."""
    from pipeline.config import to_dataclass
    from student.config import StudentConfig
    from testing.stages import compose

    overrides = student_cmd(scene, run_dir, steps, *extra)[3:]  # after python -m student.train
    return to_dataclass(compose("student", overrides), StudentConfig)


def truncate(path: Path) -> None:
    """Cut ``path`` to half its size, as a copy killed midway leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated(tmp: Path, stage: str) -> Outcome:
    scene = make_procedural_scene(tmp / "scene")
    run_dir = tmp / "run"
    if stage == "teacher":
        from teacher.train import run as run_teacher

        last = run_dir / TEACHER_LAST
        run_teacher(teacher_cfg(scene, run_dir, 2))
        (run_dir / "teacher" / "teacher.ckpt").unlink()  # as if killed before the end
        truncate(last)
        with warnings_of("training.checkpoints") as said:
            steps = run_teacher(teacher_cfg(scene, run_dir, 3))["steps"]
    else:
        from student.train import run as run_student

        last = run_dir / STUDENT_LAST
        make_photo_pseudo_run(run_dir, scene)
        run_student(student_cfg(scene, run_dir, 2))
        (run_dir / "student" / "stage_distill.ckpt").unlink()  # as if killed before the end
        truncate(last)
        with warnings_of("training.checkpoints") as said:
            steps = run_student(student_cfg(scene, run_dir, 3))["stages"]["distill"]["steps"]
    named = [m for m in said if str(last) in m]
    ok = len(named) == 1 and steps == 3 and (last.parent / "last.ckpt.unreadable").is_file()
    return Outcome("warning, fresh start" if ok else "no warning or not finished", ok,
                   f"{len(named)} warning(s): {named[0] if named else said}; finished at step {steps} of 3")


def _changed_interval(tmp: Path) -> Outcome:
    from teacher.train import run as run_teacher

    scene = make_procedural_scene(tmp / "scene")
    run_dir = tmp / "run"
    run_teacher(teacher_cfg(scene, run_dir, 2, "train.checkpoint_seconds=0.001"))
    (run_dir / "teacher" / "teacher.ckpt").unlink()  # as if killed after the last checkpoint
    run_teacher(teacher_cfg(scene, run_dir, 4, "train.checkpoint_seconds=0.002"))
    folder = run_dir / TEACHER_LAST.parent
    names = sorted(p.name for p in folder.glob("*.ckpt"))
    step = int(torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)["global_step"])
    ok = names == ["last.ckpt"] and step == 4
    return Outcome("one resume point" if ok else "stale resume point", ok,
                   f"{names}, last.ckpt at step {step}")


def _second_live_job(tmp: Path) -> Outcome:
    from core.errors import UserError
    from pipeline.runlock import lock_path
    from teacher.train import run as run_teacher

    scene = make_procedural_scene(tmp / "scene")
    run_dir = tmp / "run"
    lock = lock_path(run_dir / "teacher", "teacher")
    first = subprocess.Popen(teacher_cmd(scene, run_dir, 100_000), cwd=REPO, env=child_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 120
        while not lock.is_file() and first.poll() is None and time.monotonic() < end:
            time.sleep(0.01)
        try:
            run_teacher(teacher_cfg(scene, run_dir, 2))
        except UserError as exc:
            message = str(exc)
            ok = "\n" not in message and str(lock) in message and f"pid {first.pid}" in message
            ok = ok and first.poll() is None  # the first job goes on
            return Outcome("one-line error", ok, message)
        return Outcome("second job ran", False, "no error while the first job held the folder")
    finally:
        first.kill()
        first.wait()


def _stale_lock(tmp: Path) -> Outcome:
    import json
    import socket

    from pipeline.runlock import lock_path
    from student.train import run as run_student

    scene = make_procedural_scene(tmp / "scene")
    run_dir = make_photo_pseudo_run(tmp / "run", scene)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = lock_path(run_dir / "student", "student")
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "stage": "student"}))
    with warnings_of("pipeline.runlock") as said:
        steps = run_student(student_cfg(scene, run_dir, 2))["stages"]["distill"]["steps"]
    named = [m for m in said if str(lock) in m and str(dead.pid) in m]
    ok = len(named) == 1 and steps == 2 and not lock.exists()
    return Outcome("warning, taken over" if ok else "not taken over", ok,
                   f"{named[0] if named else said}; finished at step {steps}")


CASES: list[FaultCase] = [
    FaultCase("teacher", "kill", "SIGKILL during last.ckpt saves (x2), TMPDIR on /dev/shm",
              lambda tmp: _kill_loop(tmp, "teacher", 2)),
    FaultCase("student", "kill", "SIGKILL during last.ckpt saves (x2), TMPDIR on /dev/shm",
              lambda tmp: _kill_loop(tmp, "student", 2)),
    FaultCase("teacher (NeRF-XL)", "kill", "SIGKILL torchrun and its 2 ranks during a region save, rerun in "
              "one process", _partitioned_kill, multiprocess=True),
    FaultCase("teacher", "corrupt file", "truncated lightning/last.ckpt",
              lambda tmp: _truncated(tmp, "teacher")),
    FaultCase("student", "corrupt file", "truncated ckpt/distill/last.ckpt",
              lambda tmp: _truncated(tmp, "student")),
    FaultCase("teacher", "stale file", "train.checkpoint_seconds changed between runs (version counter)",
              _changed_interval),
    FaultCase("teacher", "concurrent job", "a second live job on the same run folder", _second_live_job),
    FaultCase("student", "stale file", "a run-folder lock left by a dead pid", _stale_lock),
]
