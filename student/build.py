"""The student network of a run, built from its inputs, and the scene facts its checkpoint stores.

:func:`build_student` makes either decoder over the pseudo-data's boxes (else the scene's);
:func:`scene_meta` is the record ``save_student`` writes for export.
"""

from __future__ import annotations

import logging

import torch

from core.errors import UserError
from core.ndc import NDCSpace
from core.rig import camera_rig
from core.scene_facts import SceneFacts
from core.shards import PseudoMeta
from core.skipgrid import dilate_grid, dilation_radius, unpack_grid
from scenes.load import Scene
from student.checkpoint import Student, build_model
from student.config import StudentConfig
from student.image_data import DEPTH_FIELDS
from student.image_model import ImageStudent
from student.model import R2LStudent

log = logging.getLogger(__name__)


def build_student(cfg: StudentConfig, meta: PseudoMeta | None, scene: Scene, background: list[float]
                  ) -> Student:
    """The student network, its content box and ray range taken from the pseudo-data (else the scene).

    A forward-facing scene's ray student samples the whole NDC box: it has no empty surround to skip. An
    image student is built by :func:`student.checkpoint.build_model` on :func:`image_facts`.

    Raises:
        UserError: an image student with a detail head for a forward-facing scene, or one whose depth
            loss has no teacher depth to read (one line, before any training).
    """
    if cfg.model.decoder == "image":
        check_depth_fields(cfg, meta)
        return build_model(cfg.model, image_facts(scene, background, meta))
    if meta is not None:
        facts = meta.scene
        ndc = NDCSpace.from_dict(facts.ndc) if facts.ndc is not None else None
        box = facts.aabb if ndc is not None else facts.content_aabb
        return R2LStudent(cfg.model, torch.tensor(box), facts.near, facts.far, background, ndc,
                          skip_grid(cfg, meta))
    return R2LStudent(cfg.model, scene.aabb, scene.near, scene.far, background, scene.ndc)


def check_depth_fields(cfg: StudentConfig, meta: PseudoMeta | None) -> None:
    """Refuse a detail head trained with a depth loss on pseudo-data without the teacher's depth.

    Raises:
        UserError: ``model.image.detail_channels > 0`` and ``train.crops.depth_weight > 0``, but
            ``meta.json`` lists no ``depth`` and ``alpha``.
    """
    if meta is None or cfg.model.image.detail_channels == 0 or cfg.train.crops.depth_weight == 0:
        return
    missing = [name for name in DEPTH_FIELDS if name not in meta.fields]
    if missing:
        raise UserError(f"{meta.folder}/meta.json: model.image.detail_channels="
                        f"{cfg.model.image.detail_channels} learns its depth from the teacher's, but the "
                        f"pseudo-data has no {' and no '.join(missing)}: render it with python -m "
                        "data_gen.render depth=true alpha=true, or set train.crops.depth_weight=0")


SPACING_RATIO = 1.5  # an image student's pseudo-views this much coarser than its photos are warned of


def ray_spacing_note(cfg: StudentConfig, meta: PseudoMeta | None, scene: Scene) -> str | None:
    """A warning when an image student distils on pseudo-views much coarser than the photos, else ``None``.

    An image student learns its decoder at the spacing of its training rays (a block of ``s x s``
    pixels covers what a block covers in the pseudo-views), so pseudo-views rendered smaller than the
    photos it is tested at teach it the wrong block (measured on the LLFF flower scene: 17.85 dB after
    distilling on the CPU profile's 1000 views of 115x87 against 22.96 dB on 100 views of the photos'
    504x378; ``benchmarks/RESULTS.md``, section ``image_forward``)."""
    if cfg.model.decoder != "image" or meta is None or not cfg.train.distill.enabled:
        return None
    H, W = scene.split("train").hw
    h, w = meta.image_size
    ratio = max(H / h, W / w)
    if ratio < SPACING_RATIO:
        return None
    return (f"{meta.folder}/meta.json: the image student learns the ray spacing of its pseudo-views, and "
            f"these ({h}x{w}) are {ratio:.1f}x coarser than the {H}x{W} photos it is tested at; render them "
            f"at the photos' size: python -m data_gen.render image_size=[{H},{W}] n_views=N")


def skip_grid(cfg: StudentConfig, meta: PseudoMeta) -> torch.Tensor | None:
    """The pseudo-data's empty-space grid dilated for the student's K points (``[G, G, G]`` bool), or
    ``None`` (switched off, not recorded, or a forward-facing scene)."""
    off = not cfg.model.skip_empty or cfg.model.ray_range != "box"
    if off or meta.scene.occupancy is None or meta.scene.ndc is not None:
        return None
    grid = torch.from_numpy(unpack_grid(meta.scene.occupancy, "meta.json: occupancy"))
    radius = dilation_radius(grid.shape[0], cfg.model.n_points)
    dilated = dilate_grid(grid, radius)
    log.info("empty-space grid %d^3 dilated by %d cells: %.1f%% of the content box may show something",
             grid.shape[0], radius, 100 * dilated.float().mean().item())
    return dilated


def image_facts(scene: Scene, background: list[float], meta: PseudoMeta | None) -> SceneFacts:
    """The scene facts of an image student (built on them, saved with them): scene box, content box and ray
    range of the pseudo-data (else the scene's box; a forward-facing scene's content box is its NDC box),
    the training cameras; no empty-space grid."""
    train = scene.split("train")
    src = meta.scene if meta is not None else None
    aabb = list(src.aabb) if src is not None else scene.aabb.tolist()
    ndc = src.ndc if src is not None else (scene.ndc.to_dict() if scene.ndc is not None else None)
    return SceneFacts(
        aabb=aabb,
        content_aabb=list(src.content_aabb) if src is not None and ndc is None else aabb,  # NDC: its box
        near=src.near if src is not None else scene.near,
        far=src.far if src is not None else scene.far,
        image_size=list(train.hw),
        K=train.K[0].tolist(),
        camera_convention=scene.convention,
        scene_name=scene.name,
        background=list(background),
        ndc=ndc,
        scene_kind=scene.kind,
        rig=camera_rig(train.c2w, scene.ndc),
    )


def scene_meta(scene: Scene, model: Student, background: list[float], meta: PseudoMeta | None
               ) -> SceneFacts:
    """The scene facts ``save_student`` stores for export (scene box: the pseudo-data's, else the scene's;
    an image student's: :func:`image_facts`)."""
    if isinstance(model, ImageStudent):
        return image_facts(scene, background, meta)
    scene_box = torch.tensor(meta.scene.aabb) if meta is not None else scene.aabb
    train = scene.split("train")
    return SceneFacts(
        aabb=scene_box.tolist(),
        content_aabb=model.encoder.box.tolist(),
        near=model.encoder.near,
        far=model.encoder.far,
        image_size=list(train.hw),
        K=train.K[0].tolist(),
        camera_convention=scene.convention,
        scene_name=scene.name,
        background=list(background),
        ndc=model.encoder.ndc.to_dict() if model.encoder.ndc is not None else None,
        scene_kind=scene.kind,
        occupancy=model.encoder.occupancy_record(),
        rig=camera_rig(train.c2w, model.encoder.ndc),
    )
