"""Tiny runs for tests and fault cases: shrunk stage configs, and run folders made without training.

* :data:`TINY_TEACHER`, :data:`TINY_STUDENT`: overrides that make a stage's run take seconds;
  :func:`teacher_cfg` and :func:`data_gen_cfg` compose the real configs with them;
* :func:`make_tiny_teacher_run`, :func:`make_tiny_student_ckpt`, :func:`make_tiny_image_ckpt`: untrained
  (seeded) models saved as a stage would save them; :func:`write_photo_pseudo` /
  :func:`make_photo_pseudo_run`: pseudo-data shards of a scene's training photos (no teacher needed);
* :func:`run_ranks`: ``teacher.train.run`` in spawned processes, as ``torchrun`` would start it.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from data_gen.render import DataGenConfig
    from teacher.config import TeacherConfig

# a deliberately small teacher (``python -m teacher.train`` overrides) so that a good run takes seconds
TINY_TEACHER = [
    "train.max_steps=2",
    "train.max_seconds=60",
    "train.batch_rays=256",
    "train.progress_bar=false",
    "eval.progress_bar=false",
    "model.field.grid.n_levels=4",
    "model.field.grid.log2_hashmap_size=12",
    "model.field.grid.max_resolution=64",
    "model.occupancy.resolution=16",
]
# a small student (``python -m student.train`` overrides): finetune only, 20 steps
TINY_STUDENT = ["model.depth=4", "model.width=32", "model.n_points=8", "model.n_freqs=4",
                "train.num_workers=0", "train.progress_bar=false", "train.distill.enabled=false",
                "train.finetune.max_steps=20", "train.finetune.batch_size=256",
                "train.finetune.warmup_steps=0", "eval.chunk=128"]


def teacher_cfg(scene: Path, run_dir: Path, *overrides: str) -> TeacherConfig:
    """The real composed ``teacher`` config shrunk to :data:`TINY_TEACHER`, then ``overrides``."""
    from pipeline.config import to_dataclass
    from teacher.config import TeacherConfig
    from testing.stages import compose

    base = [*TINY_TEACHER, f"scene.path={scene}", f"run_dir={run_dir}"]
    return to_dataclass(compose("teacher", base + list(overrides)), TeacherConfig)


def data_gen_cfg(scene: Path, run_dir: Path, *overrides: str) -> DataGenConfig:
    """The real composed ``data_gen`` config, shrunk: 7 views in shards of 3, at half the scene's image
    size, no progress bar; then ``overrides``."""
    from data_gen.render import DataGenConfig
    from pipeline.config import to_dataclass
    from testing.stages import compose

    base = [f"scene.path={scene}", f"run_dir={run_dir}", "n_views=7", "views_per_shard=3", "image_scale=0.5",
            "progress=false"]
    return to_dataclass(compose("data_gen", base + list(overrides)), DataGenConfig)


def make_tiny_teacher_run(run_dir: Path, scene_path: Path, seed: int = 0) -> Path:
    """Write an untrained (randomly initialised, seeded) tiny teacher of ``scene_path`` to
    ``<run_dir>/teacher/teacher.ckpt`` with a ``metrics.json``; returns the checkpoint path."""
    from cuda.backend import HashGridConfig
    from scenes.load import SceneConfig, load_scene
    from teacher.checkpoint import save_teacher
    from teacher.field import FieldConfig
    from teacher.model import TeacherModelConfig, build_teacher
    from teacher.occupancy import OccupancyConfig
    from teacher.render import MarchConfig

    scene = load_scene(SceneConfig(path=str(scene_path)), splits=("train",))
    cfg = TeacherModelConfig(
        field=FieldConfig(grid=HashGridConfig(n_levels=2, log2_hashmap_size=8, base_resolution=4,
                                              max_resolution=16, backend="torch"), hidden_dim=16),
        occupancy=OccupancyConfig(resolution=8),
        render=MarchConfig(steps_per_diagonal=32, chunk=1024),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher = build_teacher(cfg, scene.aabb, scene.near, scene.far)
    ckpt = run_dir / "teacher" / "teacher.ckpt"
    save_teacher(ckpt, teacher)
    (ckpt.parent / "metrics.json").write_text(json.dumps({"test": {"psnr": 12.5, "ssim": 0.5, "n_views": 2}}))
    return ckpt


def make_tiny_student_ckpt(path: Path, scene_root: Path, n_freqs: int = 10, encoding: str = "pe") -> Path:
    """Save a small randomly initialised student for ``scene_root`` with its scene facts (export tests).

    A forward-facing scene's student takes its NDC frame and the whole NDC box (as training does); an
    object scene's gets a content box smaller than the scene box and an empty-space grid (a ball of set
    cells in a 9^3 grid), so exports see rays that miss the box, rays the grid skips and rays evaluated.
    """
    from scenes.load import SceneConfig, load_scene
    from student.build import scene_meta
    from student.checkpoint import save_student
    from student.encoding import GridConfig, HashRayEncoder
    from student.model import R2LStudent, StudentModelConfig

    scene = load_scene(SceneConfig(path=str(scene_root)), splits=("train",))
    # a content box smaller than the scene box, so that exports see rays that hit it and rays that miss it
    center, half = (scene.aabb[:3] + scene.aabb[3:]) / 2, (scene.aabb[3:] - scene.aabb[:3]) / 2
    box = torch.cat([center - 0.5 * half, center + 0.5 * half]) if scene.ndc is None else scene.aabb
    grid = GridConfig(n_levels=3, n_features=2, log2_hashmap_size=14, base_resolution=8, max_resolution=64)
    cells = (torch.stack(torch.meshgrid(*[torch.arange(9) + 0.5] * 3, indexing="ij"), -1) - 4.5).norm(dim=-1)
    occupancy = cells < 3.7 if scene.ndc is None else None  # [9, 9, 9]: a ball in the content box
    model = R2LStudent(StudentModelConfig(encoding=encoding, n_points=4, n_freqs=n_freqs, width=32, depth=6,
                                          grid=grid), box, scene.near, scene.far, ndc=scene.ndc,
                       occupancy=occupancy)
    if encoding == "hash":  # features of the size a trained table has, so the output depends on them
        assert isinstance(model.encoder, HashRayEncoder)
        with torch.no_grad():
            model.encoder.grid.params.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(3))
    return save_student(path, model, scene_meta(scene, model, [1.0, 1.0, 1.0], None))


# a tiny image student (model.image overrides): 2x2 pixels per ray, one 8^2 tri-plane level, an 8-wide body
TINY_IMAGE_STUDENT: dict[str, Any] = {"scale": 2, "n_points": 2, "channels": 4, "resolutions": [8],
                                      "width": 8, "depth": 1, "tail": 4}


def make_tiny_image_ckpt(path: Path, scene_root: Path, seed: int = 0) -> Path:
    """Save a randomly initialised (seeded) :data:`TINY_IMAGE_STUDENT` image student for the object scene
    ``scene_root`` with its scene facts, as ``student.train`` saves one (export tests).

    Its content box is half the scene box (so views show rays that miss it), and its planes are drawn with
    unit spread, the size trained features have, so that the image depends on them.
    """
    from core.rig import camera_rig
    from core.scene_facts import SceneFacts
    from scenes.load import SceneConfig, load_scene
    from student.checkpoint import build_model, save_student
    from student.image_model import ImageStudent, ImageStudentConfig
    from student.model import StudentModelConfig

    scene = load_scene(SceneConfig(path=str(scene_root)), splits=("train",))
    train = scene.split("train")
    center, half = (scene.aabb[:3] + scene.aabb[3:]) / 2, (scene.aabb[3:] - scene.aabb[:3]) / 2
    box = torch.cat([center - half / 2, center + half / 2])
    facts = SceneFacts(aabb=scene.aabb.tolist(), content_aabb=box.tolist(), near=scene.near, far=scene.far,
                       image_size=list(train.hw), K=train.K[0].tolist(), camera_convention=scene.convention,
                       scene_name=scene.name, background=[1.0, 1.0, 1.0], scene_kind=scene.kind,
                       rig=camera_rig(train.c2w))
    image = ImageStudentConfig(**copy.deepcopy(TINY_IMAGE_STUDENT))
    cfg = StudentModelConfig(decoder="image", encoding="planes", image=image)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg, facts)
        assert isinstance(model, ImageStudent)
        with torch.no_grad():
            for planes in model.encoding.planes:
                planes.normal_(0.0, 1.0)
    return save_student(path, model, facts)


def export_tiny_image_run(run_dir: Path, scene_root: Path, **keys: Any) -> dict[str, Any]:
    """Write a :func:`make_tiny_image_ckpt` checkpoint into ``<run_dir>/student/`` and export it with
    ``export.onnx.run`` (export config ``keys`` over the defaults, a small parity check); returns the
    report (``export.json``)."""
    from export.onnx import ExportConfig, ParityConfig, run
    from scenes.load import SceneConfig

    make_tiny_image_ckpt(run_dir / "student" / "student.ckpt", scene_root)
    keys.setdefault("parity", ParityConfig(n_poses=2))
    return run(ExportConfig(scene=SceneConfig(path=str(scene_root)), run_dir=str(run_dir), **keys))


def write_photo_pseudo(folder: Path, scene_root: Path, background: Sequence[float] = (1.0, 1.0, 1.0),
                       counts: Sequence[int] = (3, 3, 2), geometry: bool = False) -> Path:
    """Write pseudo-data shards of the scene's training photos on ``background`` into ``folder``: shard
    ``i`` holds the next ``counts[i]`` views (``data_gen.shards.write_shard``), with their ``meta.json``.
    ``geometry``: also a ``depth`` (each camera's distance to the origin, varied per pixel) and the
    photos' ``alpha``, as ``data_gen depth=true alpha=true`` writes them. Returns ``folder``."""
    from core.io import write_json
    from core.scene_facts import SceneFacts
    from core.shards import PseudoMeta, ShardInfo, shard_name
    from data_gen.shards import write_shard
    from scenes.load import SceneConfig, load_scene

    scene = load_scene(SceneConfig(path=str(scene_root)), splits=("train",))
    train = scene.split("train")
    rgb = train.rgb(list(background))
    shards, first = [], 0
    for index, count in enumerate(counts):
        views = [{"view_index": i, "rgb": rgb[i], "c2w": train.c2w[i], "K": train.K[i]}
                 for i in range(first, first + count)]
        for i, v in enumerate(views if geometry else [], start=first):
            H, W = train.hw
            ramp = torch.linspace(-0.2, 0.2, W).expand(H, W)
            v["depth"] = train.c2w[i, :3, 3].norm() + ramp
            v["alpha"] = train.images[i, ..., 3]
        sha = write_shard(folder / shard_name(index), views)
        shards.append(ShardInfo(shard_name(index), first, count, sha))
        first += count
    facts = SceneFacts(aabb=scene.aabb.tolist(), content_aabb=scene.aabb.tolist(), near=scene.near,
                       far=scene.far, image_size=list(train.hw), K=train.K[0].tolist(), scene_name="tiny",
                       background=list(background))
    meta = PseudoMeta(scene=facts, image_size=list(train.hw), n_views=first, views_per_shard=counts[0],
                      shards=shards, sampler={"name": "train_photos", "seed": 0}, teacher={},
                      fields=["rgb", "c2w", "K", *(["depth", "alpha"] if geometry else [])])
    write_json(folder / "meta.json", meta.to_dict())
    return folder


def make_photo_pseudo_run(run_dir: Path, scene_root: Path) -> Path:
    """Write ``<run_dir>/pseudo/``: three shards (3 + 3 + 2 views of an 8-view scene) of the scene's train
    photos on a white background (:func:`write_photo_pseudo`); returns ``run_dir``."""
    write_photo_pseudo(run_dir / "pseudo", scene_root)
    return run_dir


def shard_hashes(folder: Path) -> dict[str, str]:
    """``{shard file name: sha256}`` of a pseudo-data folder."""
    from core.io import sha256_file

    return {p.name: sha256_file(p) for p in sorted(folder.glob("shard-*.tar"))}


def _rank(rank: int, world: int, port: int, cfg: TeacherConfig) -> None:
    """One torchrun-like process of a teacher run (the environment torchrun would set)."""
    import torch.distributed as dist

    from teacher.train import run

    torch.set_num_threads(1)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    try:
        run(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(cfg: TeacherConfig, world: int = 2) -> None:
    """Run ``teacher.train.run(cfg)`` in ``world`` spawned processes, as ``torchrun`` would."""
    import torch.multiprocessing as mp

    from pipeline.run import free_port

    mp.spawn(_rank, args=(world, free_port(), cfg), nprocs=world, join=True)
