"""A forward-facing LLFF scene through every training stage: teacher -> pseudo-data -> student -> ONNX.

Checks what the stages must do differently on a forward-facing capture (``docs/capture.md``): the NDC
frame travels from the scene to the teacher checkpoint, the shard meta, the student checkpoint and the
ONNX metadata; the forward pose sampler is picked; no ray is a "miss"; the student learns.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.ndc import NDCSpace
from core.rays import generate_rays
from pipeline.config import to_dataclass
from scenes.load import SceneConfig, load_scene
from testing.stages import compose

pytestmark = pytest.mark.slow


def test_forward_scene_through_every_stage(tiny_forward_scene: Path, tmp_path: Path) -> None:
    from data_gen.render import DataGenConfig
    from data_gen.render import run as render_run
    from export.onnx import ExportConfig
    from export.onnx import run as export_run
    from export.runtime import LightField
    from student.checkpoint import load_student
    from student.train import StudentConfig
    from student.train import run as student_run
    from teacher.checkpoint import load_teacher
    from teacher.train import run as teacher_run
    from testing.runs import teacher_cfg

    run_dir = tmp_path / "run"
    common = [f"scene.path={tiny_forward_scene}", f"run_dir={run_dir}"]
    scene = load_scene(SceneConfig(path=str(tiny_forward_scene)))
    assert scene.kind == "forward" and scene.ndc is not None and scene.near == 0.0

    teacher = teacher_run(teacher_cfg(tiny_forward_scene, run_dir, "train.max_steps=60",
                                      "train.max_seconds=null", "train.batch_rays=512"))
    assert teacher["test"]["psnr"] > 12.0
    loaded = load_teacher(run_dir / "teacher" / "teacher.ckpt")
    assert loaded.ndc == scene.ndc

    # a forward-facing scene takes the forward group's view count (n_views is the objects'), at the photos'
    # size unless the forward group's cap binds
    render_run(to_dataclass(compose("data_gen", common + [
        "n_views=7", "forward.n_views=12", "forward.views_per_shard=6", "progress=false"]), DataGenConfig))
    meta = json.loads((run_dir / "pseudo" / "meta.json").read_text())
    assert meta["sampler"]["name"] == "forward" and meta["scene"]["scene_kind"] == "forward"
    assert meta["n_views"] == 12 and len(meta["shards"]) == 2
    assert meta["image_size"] == list(scene.split("train").hw)
    assert NDCSpace.from_dict(meta["scene"]["ndc"]) == scene.ndc

    metrics = student_run(to_dataclass(compose("student", common + [
        "model.decoder=ray", "model.encoding=hash", "model.depth=4", "model.width=48", "model.n_points=8",
        "forward.width=32", "forward.grid.n_levels=3", "forward.grid.log2_hashmap_size=12",
        "forward.grid.max_resolution=64", "train.num_workers=0", "train.progress_bar=false",
        "train.distill.max_steps=80", "train.distill.max_seconds=null", "train.distill.batch_size=512",
        "train.distill.warmup_steps=5", "train.distill.val_every_steps=40", "train.finetune.max_steps=20",
        "train.finetune.max_seconds=null", "train.finetune.batch_size=512", "train.finetune.warmup_steps=2",
        "train.finetune.val_every_steps=10", "eval.chunk=256"]), StudentConfig))
    assert metrics["test"]["psnr"] > 12.0
    model, facts = load_student(run_dir / "student" / "student.ckpt")
    # a forward-facing scene's hash student takes the forward group's grid and width (model.width ignored)
    assert model.cfg.width == 32 and model.cfg.grid.n_levels == 3 and model.cfg.grid.log2_hashmap_size == 12
    assert model.cfg.grid.max_resolution == 64
    assert facts.ndc is not None and NDCSpace.from_dict(facts.ndc) == scene.ndc
    assert facts.scene_kind == "forward" and facts.rig is not None and facts.rig["kind"] == "forward"
    # the student samples the whole NDC box and every ray is a hit, even one far outside the views
    assert torch.allclose(model.encoder.box, scene.aabb)
    test = scene.split("test")
    rays_o, rays_d = generate_rays(test.c2w[0], test.K[0], *test.hw)
    assert bool(model.encoder.segment(rays_o, rays_d)[2].all())

    export_run(ExportConfig(scene=SceneConfig(path=str(tiny_forward_scene)), run_dir=str(run_dir),
                            variants=["fp32"], static_variants=[]))
    field = LightField(run_dir / "export" / "student.onnx")
    assert field.meta.ray_space == "ndc" and NDCSpace.from_dict(field.meta.ndc) == scene.ndc
    with torch.inference_mode():
        expected = model(rays_o, rays_d).numpy()
    got = field(rays_o.numpy(), rays_d.numpy())
    assert np.abs(got - expected).max() < 1e-4


def test_partitioned_teacher_refuses_a_forward_scene(tiny_forward_scene: Path, tmp_path: Path) -> None:
    from core.errors import UserError
    from teacher.config import TeacherConfig
    from teacher.train import run as teacher_run

    cfg = to_dataclass(compose("teacher", [f"scene.path={tiny_forward_scene}", f"run_dir={tmp_path}",
                                           "distributed.partitions=2", "train.max_steps=2"]), TeacherConfig)
    with pytest.raises(UserError, match="forward-facing scene .* cannot be partitioned"):
        teacher_run(cfg)
