"""``student.config.for_scene``: ``model.decoder=auto`` picks the image student for a forward-facing scene and
the ray student for an object; the forward group fills in the ``hash`` ray student and the image student of a
forward-facing scene only."""

from __future__ import annotations

import dataclasses

import pytest

from student.config import StudentConfig, StudentForwardConfig, for_scene
from student.encoding import GridConfig
from student.model import StudentModelConfig


def _cfg(seconds_factor: float = 1.0, **model: object) -> StudentConfig:
    forward = StudentForwardConfig(grid=GridConfig(n_levels=6, log2_hashmap_size=18, max_resolution=256),
                                   width=96, image_resolutions=[96, 192], seconds_factor=seconds_factor)
    return StudentConfig(model=StudentModelConfig(**model), forward=forward)  # type: ignore[arg-type]


def test_a_forward_hash_student_takes_the_forward_grid_and_width() -> None:
    cfg = _cfg(encoding="hash", width=64, depth=4)
    used = for_scene(cfg, forward_facing=True)
    assert used.model.grid == cfg.forward.grid and used.model.width == 96
    # everything else of the model, and the rest of the config, as given
    assert dataclasses.replace(used.model, grid=cfg.model.grid, width=64) == cfg.model
    assert used.train == cfg.train and used.forward == cfg.forward
    assert cfg.model.width == 64 and cfg.model.grid.n_levels == 4  # the given config is not changed


def test_objects_and_other_students_ignore_the_forward_group() -> None:
    hash_cfg = _cfg(encoding="hash", width=64, depth=4)
    assert for_scene(hash_cfg, forward_facing=False) is hash_cfg
    pe_cfg = _cfg(encoding="pe", width=64, depth=4)
    assert for_scene(pe_cfg, forward_facing=True) is pe_cfg
    image_cfg = _cfg(decoder="image", encoding="planes")
    assert for_scene(image_cfg, forward_facing=False) is image_cfg
    longer = _cfg(3.0, decoder="auto", encoding="hash")
    assert for_scene(longer, forward_facing=False).train == longer.train


@pytest.mark.parametrize("model", [dict(encoding="pe"), dict(encoding="hash"),
                                   dict(decoder="auto", encoding="hash")])
def test_a_forward_student_trains_seconds_factor_times_longer(model: dict[str, str]) -> None:
    cfg = _cfg(2.5, **model)
    cfg.train.distill.max_seconds, cfg.train.finetune.max_seconds = 320.0, None  # None: no time limit
    used = for_scene(cfg, forward_facing=True)
    assert used.train.distill.max_seconds == 800.0 and used.train.finetune.max_seconds is None
    assert dataclasses.replace(used.train.distill, max_seconds=320.0) == cfg.train.distill
    assert dataclasses.replace(used.train, distill=cfg.train.distill) == cfg.train
    assert cfg.train.distill.max_seconds == 320.0  # the given config is not changed


def test_a_forward_image_student_takes_the_forward_plane_resolutions() -> None:
    cfg = _cfg(decoder="image", encoding="planes")
    used = for_scene(cfg, forward_facing=True)
    assert used.model.image.resolutions == [96, 192] and cfg.model.image.resolutions != [96, 192]
    assert dataclasses.replace(used.model.image, resolutions=cfg.model.image.resolutions) == cfg.model.image
    assert dataclasses.replace(used.model, image=cfg.model.image) == cfg.model and used.train == cfg.train


def test_auto_is_the_image_student_for_a_forward_scene_and_the_ray_student_for_an_object() -> None:
    cfg = _cfg(decoder="auto", encoding="hash", width=64, depth=4)
    forward = for_scene(cfg, forward_facing=True).model
    assert (forward.decoder, forward.encoding, forward.image.resolutions) == ("image", "planes", [96, 192])
    assert dataclasses.replace(forward, decoder="auto", encoding="hash", image=cfg.model.image) == cfg.model
    obj = for_scene(cfg, forward_facing=False).model
    assert obj == dataclasses.replace(cfg.model, decoder="ray")  # the object's hash student, as given
    assert cfg.model.decoder == "auto"  # the given config is not changed


def test_auto_takes_the_ray_decoders_encodings_only() -> None:
    from core.checks import ConfigValueError, validate

    validate(StudentModelConfig(decoder="auto", encoding="pe"), "model.")
    with pytest.raises(ConfigValueError, match=r"model.encoding=planes: cannot go with model.decoder=auto "
                                               r"\(it takes: pe, hash\)"):
        validate(StudentModelConfig(decoder="auto", encoding="planes"), "model.")


def test_the_cpu_profiles_student_of_a_forward_scene_is_the_image_student() -> None:
    from pipeline.config import to_dataclass
    from testing.stages import compose

    cfg = to_dataclass(compose("student", ["profile=cpu"]), StudentConfig)
    assert cfg.model.decoder == "auto"
    assert for_scene(cfg, forward_facing=True).model.decoder == "image"
    assert for_scene(cfg, forward_facing=False).model.encoding == "hash"
    paper = to_dataclass(compose("student", ["profile=paper"]), StudentConfig)
    assert for_scene(paper, forward_facing=True).model.decoder == "ray"  # R2L's student everywhere
