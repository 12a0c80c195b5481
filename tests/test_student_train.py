"""Student training: distill on shards, finetune on photos, resume, outputs, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.errors import UserError
from pipeline.config import to_dataclass
from student.checkpoint import load_student
from student.config import StudentConfig
from student.train import run
from testing.stages import compose


def tiny_cfg(scene: Path, run_dir: Path, *overrides: str) -> StudentConfig:
    """The real config, shrunk to seconds on the tiny scene."""
    cfg = compose("student", [
        f"scene.path={scene}", f"run_dir={run_dir}", "model.depth=4", "model.width=32", "model.n_points=8",
        "model.n_freqs=4", "train.num_workers=2", "train.shuffle_buffer=1024", "train.progress_bar=false",
        "train.distill.max_steps=60", "train.distill.batch_size=256", "train.distill.warmup_steps=5",
        "train.distill.val_every_steps=30", "train.distill.lr=5e-3",
        "train.finetune.max_steps=20", "train.finetune.batch_size=256", "train.finetune.warmup_steps=2",
        "train.finetune.val_every_steps=10", "train.ckpt_every_steps=20", "eval.chunk=128",
        *overrides,
    ])
    return to_dataclass(cfg, StudentConfig)


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "pseudo", dst / "pseudo")
    return dst


def _curve(run_dir: Path, stage: str, key: str = "train/loss") -> list[float]:
    from report.build import read_curves

    return [v for _, v in read_curves(run_dir / "student" / "logs" / "csv" / stage)[key]]


@pytest.mark.slow
@pytest.mark.parametrize("cache_gb", ["2.0", "0"], ids=["rays-in-memory", "streamed"])
def test_distill_then_finetune_writes_outputs(tiny_scene: Path, tiny_pseudo_run: Path,
                                              tmp_path: Path, cache_gb: str) -> None:
    run_dir = _copy_run(tiny_pseudo_run, tmp_path / "run")
    metrics = run(tiny_cfg(tiny_scene, run_dir, f"train.ray_cache_gb={cache_gb}"))
    out = run_dir / "student"
    assert set(metrics["stages"]) == {"distill", "finetune"}
    loss = _curve(run_dir, "distill")
    assert loss[-1] < 0.7 * loss[0], loss
    assert metrics["test"]["psnr"] > metrics["stages"]["distill"]["test"]["psnr"] - 1.0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"]["psnr"] == pytest.approx(metrics["test"]["psnr"])
    assert saved["flops_per_ray"] > 0 and saved["n_params"] > 0 and "teacher_test_psnr" in saved
    model, facts = load_student(out / "student.ckpt")
    assert facts.image_size == [16, 16] and facts.background == [1.0, 1.0, 1.0]
    assert facts.rig is not None and facts.rig["kind"] == "object"
    assert len(list((out / "renders").glob("test_*.png"))) == 2
    assert not (run_dir / "report.md").exists()  # the report is the pipeline's last step, not the student's
    from report.__main__ import main as report_main

    report_main([f"run_dir={run_dir}", f"scene.path={tiny_scene}"])
    assert (run_dir / "report.md").is_file() and (run_dir / "report.html").is_file()
    assert (run_dir / "report_files" / "curves.png").is_file()
    assert "student (finetune)" in (run_dir / "report.md").read_text()
    assert list((out / "logs" / "tb" / "distill" / "version_0").glob("events.out.tfevents*"))


@pytest.mark.slow
def test_resume_after_a_real_kill_finishes_like_an_uninterrupted_run(tiny_scene: Path, tiny_pseudo_run: Path,
                                                                     tmp_path: Path) -> None:
    """SIGKILL a real ``student.train`` during a ``last.ckpt`` save (``TMPDIR`` on ``/dev/shm``), rerun it.

    Steps (so rays seen: steps x batch) must equal an uninterrupted run's exactly. The weights cannot: a
    resumed stage reseeds its shuffled shard stream on purpose (``seed + 7919 * step``, so that it does not
    replay the rays of the first run), so the final loss is compared within a tolerance instead.
    """
    from testing.faults.checkpoints import STUDENT_LAST, student_cfg, student_cmd
    from testing.faults.kills import kill_at_a_save, shm_tmpdir

    steps = 60
    straight = run(student_cfg(tiny_scene, _copy_run(tiny_pseudo_run, tmp_path / "straight"), steps))
    run_dir = _copy_run(tiny_pseudo_run, tmp_path / "run")
    with shm_tmpdir() as tmpdir:
        assert kill_at_a_save(student_cmd(tiny_scene, run_dir, steps), run_dir / STUDENT_LAST, tmpdir)
    import torch

    saved = torch.load(run_dir / STUDENT_LAST, weights_only=True)["global_step"]
    assert 0 < saved < steps and not (run_dir / "student" / "stage_distill.ckpt").exists()
    again = run(student_cfg(tiny_scene, run_dir, steps))["stages"]["distill"]
    first = straight["stages"]["distill"]
    assert again["resumed"] and again["steps"] == first["steps"] == steps  # exactly, no 58 of 60
    from report.build import read_curves

    curve = read_curves(run_dir / "student" / "logs" / "csv" / "distill")["train/loss"]
    assert max(s for s, _ in curve) >= steps - 10  # the rerun appended to the stage's curve
    assert again["train_loss"] == pytest.approx(first["train_loss"], rel=0.5)  # same regime, other rays

def test_finetune_reads_the_real_photos(tiny_scene: Path) -> None:
    from scenes.load import SceneConfig, load_scene
    from student.data import photo_rays

    scene = load_scene(SceneConfig(path=str(tiny_scene)), splits=("train", "test"))
    packed = photo_rays(scene, [0.0, 1.0, 0.0])
    train = scene.split("train")
    assert packed.shape == (train.n_views * 16 * 16, 9)
    expected = train.rgb([0.0, 1.0, 0.0]).reshape(-1, 3)
    assert (packed[:, 6:] - expected).abs().max() < 1e-6
    background = train.images[..., 3].reshape(-1) == 0
    assert background.any() and (packed[background, 6:] == packed.new_tensor([0.0, 1.0, 0.0])).all()


def test_missing_shards_is_a_one_line_error(tiny_scene: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="pseudo"):
        run(tiny_cfg(tiny_scene, tmp_path / "empty"))


def _broken(tiny_pseudo_run: Path, tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    run_dir = _copy_run(tiny_pseudo_run, tmp_path / "run")
    meta_path = run_dir / "pseudo" / "meta.json"
    meta = json.loads(meta_path.read_text())
    edit(meta, run_dir / "pseudo")
    meta_path.write_text(json.dumps(meta))
    return run_dir


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("edit, match", [
    (lambda m, f: m.update(format_version=99), "format version"),
    (lambda m, f: m["scene"].update(camera_convention="opengl"), "convention"),
    (lambda m, f: m.update(format_version=1), "older version"),
    (lambda m, f: (f / m["shards"][2]["name"]).unlink(), "missing"),
    (lambda m, f: m["shards"].pop(), "not listed|n_views"),
    (lambda m, f: _truncate(f / m["shards"][1]["name"]), "shard-000001.tar: sha256 does not match"),
    (lambda m, f: m["shards"][0].update(name="../shard-000000.tar"), "'../shard-000000.tar' is not"),
    (lambda m, f: m["shards"][0].update(name="pipe:cat shard-000000.tar"), "'pipe:cat shard-000000.tar' is"),
])
def test_bad_pseudo_data_is_a_one_line_error(tiny_scene: Path, tiny_pseudo_run: Path, tmp_path: Path,
                                            edit, match) -> None:  # type: ignore[no-untyped-def]
    run_dir = _broken(tiny_pseudo_run, tmp_path, edit)
    with pytest.raises(UserError, match=match) as info:
        run(tiny_cfg(tiny_scene, run_dir))
    assert "\n" not in str(info.value) and ("meta.json" in str(info.value) or ".tar" in str(info.value))


def test_side_by_side_uses_the_teachers_test_renders(tmp_path: Path) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from student.evaluate import save_side_by_side, teacher_test_predictions

    H, W = 4, 5
    panel = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    row = np.concatenate([np.zeros_like(panel), panel, np.zeros_like(panel)], axis=1)  # gt | pred | err
    (tmp_path / "teacher" / "renders").mkdir(parents=True)
    Image.fromarray(row).save(tmp_path / "teacher" / "renders" / "r_1.png")
    teacher = teacher_test_predictions(tmp_path / "teacher", ["a/r_0.png", "a/r_1.png", "a/r_2.png"], (H, W))
    assert list(teacher) == [1] and np.array_equal(teacher[1], panel)
    gt, pred = torch.zeros(3, H, W, 3), torch.ones(3, H, W, 3)
    (path,) = save_side_by_side(tmp_path / "out", gt, pred, teacher)
    image = np.asarray(Image.open(path))
    assert path.name == "test_001.png" and image.shape == (H, 3 * W, 3)
    assert np.array_equal(image[:, W:2 * W], panel) and (image[:, 2 * W:] == 255).all()
    assert len(save_side_by_side(tmp_path / "none", gt, pred, {})) == 3  # gt | student for spaced views


HASH = ["model.encoding=hash", "model.grid.n_levels=2", "model.grid.log2_hashmap_size=12",
        "model.grid.max_resolution=32", "train.distill.encoding_lr=1e-2"]


@pytest.mark.slow
def test_hash_student_trains_exports_and_runs(tiny_scene: Path, tiny_pseudo_run: Path,
                                              tmp_path: Path) -> None:
    """The seam end to end for the learned encoding: both stages, export, the numpy runtime."""
    import numpy as np
    import torch

    from export.onnx import ExportConfig
    from export.onnx import run as export_run
    from export.runtime import LightField
    from scenes.load import SceneConfig

    run_dir = _copy_run(tiny_pseudo_run, tmp_path / "run")
    metrics = run(tiny_cfg(tiny_scene, run_dir, *HASH))
    loss = _curve(run_dir, "distill")
    assert loss[-1] < 0.7 * loss[0], loss
    assert metrics["model"]["encoding"] == "hash" and metrics["lookups_per_ray"] == 8 * 8 * 2
    model, _ = load_student(run_dir / "student" / "student.ckpt")
    assert model.encoder.name == "hash"
    report = export_run(ExportConfig(scene=SceneConfig(path=str(tiny_scene)), run_dir=str(run_dir),
                                     variants=["fp32", "int8"], static_variants=[]))
    assert report["parity"]["ok"]
    field = LightField(run_dir / "export" / "student.onnx")
    c2w = np.eye(4)
    c2w[:3, 3] = [0.0, 0.0, -4.0]  # looking at the scene along +Z
    img = field.render(c2w)
    with torch.no_grad():
        from core.rays import generate_rays

        o, d = generate_rays(torch.tensor(c2w, dtype=torch.float32), torch.tensor(field.meta.K),
                             *field.meta.image_size)
        ref = model(o, d).reshape(img.shape).numpy()
    assert np.abs(img - ref).max() < 1e-4


@pytest.mark.slow
def test_resume_with_another_encoding_is_a_one_line_error(tiny_scene: Path, tiny_pseudo_run: Path,
                                                          tmp_path: Path) -> None:
    from core.errors import CheckpointError

    run_dir = _copy_run(tiny_pseudo_run, tmp_path / "run")
    run(tiny_cfg(tiny_scene, run_dir, "train.finetune.enabled=false", "model.encoding=pe"))
    saved_pe = r"stage_distill.ckpt: saved by a student with model.encoding=pe"
    with pytest.raises(CheckpointError, match=saved_pe):
        run(tiny_cfg(tiny_scene, run_dir, "train.finetune.enabled=false", *HASH))
    (run_dir / "student" / "stage_distill.ckpt").unlink()  # now only Lightning's last.ckpt is left
    with pytest.raises(CheckpointError, match=r"last.ckpt: saved by a student of another shape or encoding"):
        run(tiny_cfg(tiny_scene, run_dir, "train.finetune.enabled=false", *HASH))
