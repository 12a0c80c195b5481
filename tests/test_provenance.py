"""``pipeline.provenance``: fingerprints compared key by key, outputs refused, reused or recorded."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from core.checkpoint import save_checkpoint
from core.errors import CheckpointError
from pipeline.provenance import (
    PROVENANCE_NAME,
    check_or_record,
    fingerprint,
    first_difference,
    ignored_fields,
    provenance_fields,
    scene_fingerprint,
)


@dataclass
class _Inner:
    width: int = 32
    backend: str = field(default="auto", metadata={"provenance": False})


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    betas: tuple[float, float] = (0.9, 0.99)
    layers: list[_Inner] = field(default_factory=lambda: [_Inner(width=8)])
    threads: int | None = field(default=None, metadata={"provenance": False})


def test_provenance_fields_leave_out_the_marked_fields_at_every_depth() -> None:
    assert provenance_fields(_Outer()) == {"inner": {"width": 32}, "betas": [0.9, 0.99],
                                           "layers": [{"width": 8}]}
    assert ignored_fields(_Outer) == {("", "threads")}


def _dotted(d: Any, prefix: str = "") -> set[str]:
    if not isinstance(d, dict):
        return {prefix.rstrip(".")}
    return {key for k, v in d.items() for key in _dotted(v, f"{prefix}{k}.")}


def test_what_counts_for_provenance_in_the_training_stages() -> None:
    """The policy, read from the config dataclasses: what a rerun may change without being refused."""
    from student.config import StudentConfig
    from teacher.config import TeacherConfig

    def left_out(cfg: Any) -> set[str]:
        return _dotted(_plain(cfg)) - _dotted(provenance_fields(cfg))

    teacher = left_out(TeacherConfig())
    assert {"run_dir", "device", "threads", "train.max_steps", "train.max_seconds",
            "train.checkpoint_seconds", "model.field.grid.backend", "model.render.chunk",
            "distributed.backend", "eval.chunk", "forward.seconds_factor"} <= teacher
    assert not {"seed", "train.batch_rays", "model.field.grid.n_levels", "optim.lr",
                "forward.distortion"} & teacher
    student = left_out(StudentConfig())
    assert {"train.distill.max_steps", "train.finetune.max_seconds", "train.devices", "train.num_workers",
            "model.grid.backend", "pseudo_dir", "eval.chunk"} <= student
    assert not {"seed", "train.precision", "train.distill.lr", "train.hard_mining.fraction"} & student


def _plain(obj: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(obj)


def test_first_difference_names_the_dotted_key() -> None:
    a = fingerprint(model={"width": 32, "depth": 4}, seed=0)
    assert first_difference(a, fingerprint(model={"width": 32, "depth": 4}, seed=0)) is None
    assert first_difference(a, fingerprint(model={"width": 64, "depth": 4}, seed=0)) == \
        "model.width: 32 on disk vs 64 requested"
    assert first_difference(a, {**a, "extra": 1}) == "extra: None on disk vs 1 requested"
    moved = {"scene": {"path": "/b"}}
    assert first_difference({"scene": {"path": "/a"}}, moved, ignore=[("scene", "path")]) is None
    assert fingerprint(betas=(0.9, 0.99)) == {"betas": [0.9, 0.99]}  # equal to its JSON copy


def test_check_or_record_refuses_reuses_and_records(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wanted = fingerprint(data="a", lr=0.01)
    ckpt = tmp_path / "model.ckpt"
    check_or_record(tmp_path, wanted, [ckpt], "delete it")  # nothing yet: recorded
    assert (tmp_path / PROVENANCE_NAME).is_file()
    save_checkpoint(ckpt, "x", {"w": torch.zeros(1)}, {}, provenance=wanted)
    check_or_record(tmp_path, wanted, [ckpt], "delete it")  # same inputs: reused
    with pytest.raises(CheckpointError, match=r"model.ckpt: made from other inputs .*\(lr: 0.01 on disk vs "
                                              r"0.02 requested\); delete it"):
        check_or_record(tmp_path, fingerprint(data="a", lr=0.02), [ckpt], "delete it")
    last = tmp_path / "last.ckpt"  # a checkpoint without an entry: compared with provenance.json
    save_checkpoint(last, "x", {"w": torch.zeros(1)}, {})
    with pytest.raises(CheckpointError, match="last.ckpt: made from other inputs"):
        check_or_record(tmp_path, fingerprint(data="b", lr=0.01), [last], "delete it")
    (tmp_path / PROVENANCE_NAME).unlink()
    with caplog.at_level(logging.WARNING):
        check_or_record(tmp_path, fingerprint(data="b", lr=0.01), [last], "delete it")  # an older run
    assert "no provenance recorded" in caplog.text


def test_scene_fingerprint_ignores_the_folder_but_not_the_cameras(tiny_scene: Path, tmp_path: Path) -> None:
    import shutil

    from scenes.load import SceneConfig, load_scene
    from testing.scenes.objects import make_procedural_scene

    moved = shutil.copytree(tiny_scene, tmp_path / "moved")
    other = make_procedural_scene(tmp_path / "other", n_train=6)
    prints = [scene_fingerprint(load_scene(SceneConfig(path=str(p)), splits=("train",)))
              for p in (tiny_scene, moved, other)]
    assert prints[0] == prints[1]
    assert prints[0]["cameras_sha256"] != prints[2]["cameras_sha256"]
    assert prints[0]["images_sha256"] != prints[2]["images_sha256"]


def test_the_teacher_forward_group_counts_for_forward_scenes_only(tiny_scene: Path, tiny_forward_scene: Path
                                                                   ) -> None:
    """An object scene's teacher fingerprint does not hold the ``forward`` group (its teachers trained
    before the group existed are reused); a forward-facing scene's does, so a new distortion weight
    refuses the old teacher."""
    from scenes.load import SceneConfig, load_scene
    from teacher.config import ForwardConfig, TeacherConfig, teacher_provenance

    obj, fwd = (load_scene(SceneConfig(path=str(p)), splits=("train",))
                for p in (tiny_scene, tiny_forward_scene))
    other = TeacherConfig(forward=ForwardConfig(distortion=0.0, seconds_factor=3.0))
    assert "forward" not in teacher_provenance(TeacherConfig(), obj)
    assert teacher_provenance(TeacherConfig(), obj) == teacher_provenance(other, obj)
    forward = teacher_provenance(TeacherConfig(), fwd)["forward"]
    assert forward == {"distortion": 0.01, "distortion_start": 0.25}
    diff = first_difference(teacher_provenance(TeacherConfig(), fwd), teacher_provenance(other, fwd))
    assert diff is not None and diff.startswith("forward.distortion")
