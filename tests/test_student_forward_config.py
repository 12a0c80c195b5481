"""``student.config.for_scene``: the forward group fills in the ``hash`` ray student and the image student of
a forward-facing scene only."""

from __future__ import annotations

import dataclasses

from student.config import StudentConfig, StudentForwardConfig, for_scene
from student.encoding import GridConfig
from student.model import StudentModelConfig


def _cfg(**model: object) -> StudentConfig:
    forward = StudentForwardConfig(grid=GridConfig(n_levels=6, log2_hashmap_size=18, max_resolution=256),
                                   width=96, image_resolutions=[96, 192])
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


def test_a_forward_image_student_takes_the_forward_plane_resolutions() -> None:
    cfg = _cfg(decoder="image", encoding="planes")
    used = for_scene(cfg, forward_facing=True)
    assert used.model.image.resolutions == [96, 192] and cfg.model.image.resolutions != [96, 192]
    assert dataclasses.replace(used.model.image, resolutions=cfg.model.image.resolutions) == cfg.model.image
    assert dataclasses.replace(used.model, image=cfg.model.image) == cfg.model and used.train == cfg.train
