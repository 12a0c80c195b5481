"""``teacher.train``: a few steps of the real config on the tiny scene, resume after a kill, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from teacher.checkpoint import load_teacher
from teacher.config import TeacherConfig
from teacher.train import run
from testing.runs import teacher_cfg

ROOT = Path(__file__).resolve().parents[1]


def _config(scene: Path, run_dir: Path, *overrides: str) -> TeacherConfig:
    return teacher_cfg(scene, run_dir, "model.field.grid.backend=torch", "model.occupancy.update_every=2",
                       "model.render.steps_per_diagonal=64", "train.batch_rays=128", "train.max_seconds=null",
                       "train.checkpoint_seconds=0.001", "eval.n_renders=1", "train.log_every=1", *overrides)


@pytest.mark.slow
def test_run_trains_evaluates_and_writes_outputs(tiny_scene: Path, tmp_path: Path) -> None:
    metrics = run(_config(tiny_scene, tmp_path, "train.max_steps=4"))
    out = tmp_path / "teacher"
    assert metrics["steps"] == 4 and metrics["backend"] == "torch"
    assert metrics["test"]["n_views"] == 2 and 0 < metrics["test"]["psnr"] < 60
    assert json.loads((out / "metrics.json").read_text())["test"] == metrics["test"]
    assert len(list((out / "renders").glob("*.png"))) == 1
    assert list((out / "logs").rglob("metrics.csv")) and list((out / "tb").rglob("events.*"))
    teacher = load_teacher(out / "teacher.ckpt")
    assert teacher.cfg.occupancy.resolution == 16 and teacher.near == pytest.approx(metrics_near(tiny_scene))
    assert run(_config(tiny_scene, tmp_path, "train.max_steps=4")) == metrics  # finished: just reports


def metrics_near(scene: Path) -> float:
    from scenes.load import SceneConfig, load_scene

    return load_scene(SceneConfig(path=str(scene)), splits=("train",)).near


@pytest.mark.slow
def test_resume_after_a_real_kill_equals_an_uninterrupted_run(tiny_scene: Path, tmp_path: Path) -> None:
    """SIGKILL a real ``teacher.train`` during a ``last.ckpt`` save (``TMPDIR`` on ``/dev/shm``, another
    filesystem), rerun it: the weights, steps and sample count equal an uninterrupted run's exactly (the
    batches are seeded by step, the random state is restored; one thread as in the child)."""
    from testing.faults.checkpoints import TEACHER_LAST, teacher_cfg, teacher_cmd
    from testing.faults.kills import kill_at_a_save, shm_tmpdir

    steps, threads = 12, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = run(teacher_cfg(tiny_scene, tmp_path / "straight", steps))
        killed = tmp_path / "killed"
        with shm_tmpdir() as tmpdir:
            assert kill_at_a_save(teacher_cmd(tiny_scene, killed, steps), killed / TEACHER_LAST, tmpdir)
        saved = torch.load(killed / TEACHER_LAST, weights_only=True)["global_step"]
        assert 0 < saved < steps and not (killed / "teacher" / "teacher.ckpt").exists()
        resumed = run(teacher_cfg(tiny_scene, killed, steps))
    finally:
        torch.set_num_threads(threads)
    assert resumed["steps"] == straight["steps"] == steps and resumed["samples"] == straight["samples"]
    a = torch.load(tmp_path / "straight" / "teacher" / "teacher.ckpt", weights_only=True)["state_dict"]
    b = torch.load(killed / "teacher" / "teacher.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logs = sorted((killed / "teacher" / "logs").glob("version_*/metrics.csv"))
    steps_logged = [int(line.split(",")[1]) for line in logs[-1].read_text().splitlines()[1:] if line]
    assert steps_logged and min(steps_logged) >= saved  # the rerun did not start over


@pytest.mark.slow
def test_unreadable_or_versioned_resume_points(tiny_scene: Path, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A truncated ``last.ckpt``: one warning naming it, a fresh start. A changed checkpoint interval
    keeps resuming from ``last.ckpt`` (Lightning's version counter would write ``last-v1.ckpt``)."""
    import logging

    last = tmp_path / "teacher" / "lightning" / "last.ckpt"
    run(_config(tiny_scene, tmp_path, "train.max_steps=2", "train.checkpoint_seconds=0.001"))
    (tmp_path / "teacher" / "teacher.ckpt").unlink()  # as if killed after the checkpoint
    run(_config(tiny_scene, tmp_path, "train.max_steps=4", "train.checkpoint_seconds=0.002"))
    assert sorted(p.name for p in last.parent.glob("*.ckpt")) == ["last.ckpt"]
    assert torch.load(last, weights_only=True)["global_step"] == 4
    (tmp_path / "teacher" / "teacher.ckpt").unlink()
    last.write_bytes(last.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="training.checkpoints"):
        metrics = run(_config(tiny_scene, tmp_path, "train.max_steps=5", "train.checkpoint_seconds=0.001"))
    warned = [r.getMessage() for r in caplog.records if r.name == "training.checkpoints"]
    assert len(warned) == 1 and str(last) in warned[0] and "starting this stage fresh" in warned[0]
    assert metrics["steps"] == 5 and (last.parent / "last.ckpt.unreadable").is_file()

def test_bad_scene_exits_with_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "teacher.train", f"scene.path={tmp_path / 'nope'}",
         f"run_dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "nope" in lines[0]
    assert not (ROOT / "outputs").exists()


def test_training_budget_counts_across_resumes() -> None:
    from types import SimpleNamespace

    from training.budget import TrainingBudget

    budget = TrainingBudget(max_seconds=100.0, max_steps=-1)
    budget.load_state_dict({"elapsed": 40.0})
    assert budget.progress(step=0) == pytest.approx(0.4, abs=1e-3)
    assert budget.seconds_fraction() == pytest.approx(0.4, abs=1e-3)  # the student's decay reads this
    trainer = SimpleNamespace(should_stop=False)
    budget.on_train_start(trainer, None)  # type: ignore[arg-type]
    assert not trainer.should_stop and budget.state_dict()["elapsed"] >= 40.0
    spent = TrainingBudget(max_seconds=30.0, max_steps=10)
    spent.load_state_dict({"elapsed": 31.0})
    spent.on_train_start(trainer, None)  # type: ignore[arg-type]
    assert trainer.should_stop  # a run resumed after its budget ran out stops at once
    with pytest.raises(ValueError, match="never stop"):
        TrainingBudget(max_seconds=None, max_steps=-1)


def test_budget_is_used_up_by_steps_or_seconds() -> None:
    """The Lightning-free budget every loop shares (the Lightning callback and the NeRF-XL loop)."""
    from core.errors import UserError
    from training.budget import Budget

    steps = Budget(max_seconds=None, max_steps=10)
    assert not steps.used_up(9) and steps.used_up(10) and steps.progress(5) == pytest.approx(0.5)
    seconds = Budget(max_seconds=30.0, max_steps=-1)
    seconds.previous = 29.0
    assert not seconds.used_up(10**6) and seconds.progress(0) == pytest.approx(29 / 30)
    seconds.previous = 30.0
    assert seconds.used_up(0) and seconds.progress(0) == 1.0 and seconds.seconds_fraction() == 1.0
    assert steps.seconds_fraction() == 0.0  # no wall-clock budget
    with pytest.raises(UserError, match="never stop"):
        Budget(max_seconds=0.0, max_steps=-1)


def test_lr_factor_decays_after_start() -> None:
    from teacher.recipe import OptimConfig, lr_factor

    cfg = OptimConfig(decay_start=0.5, final_lr_ratio=0.1)
    assert lr_factor(0.2, cfg) == 1.0 and lr_factor(0.5, cfg) == 1.0
    assert lr_factor(0.75, cfg) == pytest.approx(0.1**0.5) and lr_factor(1.0, cfg) == pytest.approx(0.1)


def test_distortion_weight_starts_at_its_fraction_of_the_budget() -> None:
    from teacher.recipe import distortion_weight

    assert [distortion_weight(p, 0.01, 0.25) for p in (0.0, 0.2499, 0.25, 1.0)] == [0.0, 0.0, 0.01, 0.01]
    assert distortion_weight(0.0, 0.01, 0.0) == 0.01 and distortion_weight(0.9, 0.0, 0.25) == 0.0
