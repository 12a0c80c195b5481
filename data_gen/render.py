"""``python -m data_gen.render``: render pseudo-views with the trained teacher into WebDataset shards.

Reads ``<run_dir>/teacher/teacher.ckpt``, samples ``n_views`` cameras (:mod:`data_gen.poses`), renders
them in batches of rays under ``torch.inference_mode`` and writes ``<run_dir>/pseudo/shard-*.tar`` plus
``meta.json`` (format: :mod:`core.shards`). Rerunning after a kill skips the complete shards (verified
by hash) and renders the rest; ``shards=START:END`` renders part of the job; ``verify=true`` only checks
an existing folder. Under ``torchrun`` (``WORLD_SIZE > 1``) the ranks split the shards; rank 0 writes
``meta.json`` after a barrier. The shards are the same bytes whichever way the job is split. One job at
a time renders into a folder (``.data_gen.lock``, :mod:`pipeline.runlock`). The stage's config is
:class:`data_gen.config.DataGenConfig` (importing this module registers it).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from core.cameras import scale_intrinsics
from core.errors import UserError, exit_on_user_error
from core.rig import camera_rig
from core.scene_facts import SceneFacts
from core.shards import META_NAME, OPTIONAL_FIELDS, PseudoMeta
from core.skipgrid import cover_grid, pack_grid
from data_gen.config import DataGenConfig, for_scene, validate
from data_gen.job import JobFolder
from data_gen.poses import Rig, build_rig
from data_gen.renderer import ShardRenderer, Timer, load_checked_teacher, teacher_info
from pipeline.config import check_command_line, to_dataclass
from pipeline.run import apply_threads, resolve_device
from pipeline.runlock import locked_run
from scenes.load import Scene, load_scene
from teacher.protocol import RenderableTeacher
from training.distributed import all_reduce, barrier, process_group

log = logging.getLogger(__name__)


def parse_shard_range(spec: str | None, n_shards: int) -> range:
    """Shard indices selected by ``"START:END"`` (either side may be empty; negatives count from the end)."""
    if spec is None or str(spec).strip() == "":
        return range(n_shards)
    parts = str(spec).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = int(parts[0]) if parts[0].strip() else None
        end = int(parts[1]) if parts[1].strip() else None
    except ValueError:
        raise UserError(f"shards={spec!r}: expected START:END, e.g. shards=0:5") from None
    selected = range(n_shards)[slice(start, end)]
    if len(selected) == 0:
        raise UserError(f"shards={spec!r} selects no shard of the {n_shards} in this job")
    return selected


def paths(cfg: DataGenConfig) -> tuple[Path, Path]:
    """The teacher checkpoint and the output folder."""
    run_dir = Path(cfg.run_dir)
    ckpt = Path(cfg.teacher_ckpt) if cfg.teacher_ckpt else run_dir / "teacher" / "teacher.ckpt"
    return ckpt, Path(cfg.out_dir) if cfg.out_dir else run_dir / "pseudo"


def scene_config(cfg: DataGenConfig, scene: Scene) -> DataGenConfig:
    """``cfg`` as this scene's job uses it (:func:`data_gen.config.for_scene`), saying when the forward
    group fills it in."""
    used = for_scene(cfg, scene.kind == "forward")
    if used is not cfg:
        cap = f"{used.max_rays:,} rays" if used.max_rays is not None else "no cap"
        log.info("forward-facing scene: forward.n_views (%d), forward.max_rays (%s) and "
                 "forward.views_per_shard (%d) in place of n_views, max_rays and views_per_shard",
                 used.n_views, cap, used.views_per_shard)
    return used


def plan(cfg: DataGenConfig, scene: Scene, teacher: RenderableTeacher, ckpt: Path) -> tuple[PseudoMeta, Rig]:
    """The job's meta (without shards) and the sampler rig, from the scene and the teacher."""
    train = scene.split("train")
    H, W = train.hw
    if cfg.image_size is not None:
        out_h, out_w = int(cfg.image_size[0]), int(cfg.image_size[1])
    else:
        scale = cfg.image_scale
        if cfg.max_rays is not None and cfg.n_views * H * W * scale**2 > cfg.max_rays:
            scale = math.sqrt(cfg.max_rays / (cfg.n_views * H * W))
            log.info("pseudo-views rendered at %.3g x the scene's %dx%d (max_rays=%d)", scale, W, H,
                     cfg.max_rays)
        out_h, out_w = max(1, round(H * scale)), max(1, round(W * scale))
    K = train.K[0].clone()
    K[0] = scale_intrinsics(K, out_w / W)[0]
    K[1] = scale_intrinsics(K, out_h / H)[1]
    rig = build_rig(train.c2w, K)
    params = {"seed": cfg.seed, "center": rig.center.tolist(), "up": rig.up.tolist(),
              "radius": cfg.sampler_params.radius if cfg.sampler_params.radius is not None else rig.radius,
              "elevation_deg": [float(torch.tensor(e).rad2deg()) for e in rig.elevation],
              "focal_scale": list(cfg.sampler_params.focal_scale), "K": K.tolist()}
    sampler = cfg.sampler
    if sampler == "auto":
        sampler = "forward" if scene.kind == "forward" else "hemisphere"
    sp = cfg.sampler_params
    if sampler == "jitter":
        params.update(jitter_deg=sp.jitter_deg, jitter_radius=sp.jitter_radius, n_train_views=train.n_views)
    if sampler == "forward":
        params.update(box_scale=sp.box_scale, n_train_views=train.n_views)
    meta = PseudoMeta(
        scene=scene_facts(scene, teacher, cfg.occupancy_resolution), image_size=[out_h, out_w],
        n_views=cfg.n_views, views_per_shard=cfg.views_per_shard, rgb_format=cfg.rgb_format,
        fields=["rgb", "c2w", "K"] + [f for f in OPTIONAL_FIELDS if getattr(cfg, f)],
        sampler={"name": sampler, **params}, teacher=teacher_info(ckpt), scene_path=str(scene.root.resolve()),
    )
    return meta, rig


def scene_facts(scene: Scene, teacher: RenderableTeacher, occupancy_resolution: int) -> SceneFacts:
    """The scene facts of the pseudo-data: the teacher's box, content box, ray range, NDC frame and
    occupied cells (:func:`occupancy_cover`), the scene's background, training cameras and rig."""
    train = scene.split("train")
    return SceneFacts(
        aabb=[float(v) for v in teacher.aabb.detach().cpu().tolist()],
        content_aabb=[float(v) for v in teacher.content_aabb().detach().cpu().tolist()],
        near=float(teacher.near), far=float(teacher.far),
        image_size=[int(v) for v in train.hw], K=train.K[0].tolist(), scene_name=scene.name,
        background=[float(v) for v in scene.background], camera_convention=scene.convention,
        scene_kind=scene.kind, ndc=teacher.ndc.to_dict() if teacher.ndc is not None else None,
        occupancy=occupancy_cover(teacher, occupancy_resolution), rig=camera_rig(train.c2w, teacher.ndc),
    )


def occupancy_cover(teacher: RenderableTeacher, resolution: int) -> dict[str, Any] | None:
    """The teacher's occupied cells covered by a ``resolution^3`` grid over its content box, packed for
    ``meta.json`` (:mod:`core.skipgrid`); ``None`` when switched off or for a forward-facing scene (whose
    rays all show something: there is no background to skip to)."""
    if resolution <= 0 or teacher.ndc is not None:
        return None
    box = teacher.content_aabb().detach().cpu()
    grid = torch.zeros(resolution, resolution, resolution, dtype=torch.bool)
    for binary, aabb in teacher.occupied_cells():
        grid |= cover_grid(binary.detach().cpu(), aabb.detach().cpu(), box, resolution)
    log.info("occupancy cover: %d^3 cells over the content box, %.1f%% set", resolution,
             100 * grid.float().mean().item())
    return pack_grid(grid)


def _verify_only(job: JobFolder) -> dict[str, Any]:
    problems = job.verify()
    for line in problems:
        log.error(line)
    if problems:
        raise UserError(f"{len(problems)} of {len(job.ranges)} shards failed verification; "
                        f"first: {problems[0]}")
    log.info("%s: all %d shards verified", job.folder, len(job.ranges))
    return {"verified": len(job.ranges), "problems": []}


@locked_run("data_gen", lambda cfg: None if cfg.verify else paths(cfg)[1])
def run(cfg: DataGenConfig) -> dict[str, Any]:
    """Render (or verify) the pseudo-data job described by ``cfg``.

    Holds ``<out_dir>/.data_gen.lock`` while rendering (:mod:`pipeline.runlock`; rank 0 under
    ``torchrun``), so that a second job on the same folder is refused in one line; ``verify=true`` only
    reads and takes none.

    Returns:
        Metrics: ``n_views``, ``n_shards``, ``written``, ``skipped``, ``complete`` (meta.json written),
        ``render_s``, ``encode_s``, ``write_s`` (summed over ranks), ``views_per_s``, ``rays_per_s`` (views
        and rays written per second of wall-clock rendering), ``out_dir``, ``rank``.
    """
    validate(cfg)
    if cfg.verify:
        return _verify_only(JobFolder.from_disk(paths(cfg)[1]))
    with process_group() as (rank, world):
        ckpt, out_dir = paths(cfg)
        device = resolve_device(cfg.device)
        apply_threads(cfg.threads)
        scene = load_scene(cfg.scene, splits=("train",))
        teacher = load_checked_teacher(ckpt, scene, device, cfg.backend)
        meta, rig = plan(scene_config(cfg, scene), scene, teacher, ckpt)
        job = JobFolder(out_dir, meta)
        selected = parse_shard_range(cfg.shards, len(job.ranges))
        job.prepare(write=rank == 0)  # every rank checks, so a mismatch stops all of them
        barrier()
        mine = list(selected)[rank::world]
        timer = Timer()
        renderer = ShardRenderer(teacher, rig, meta, cfg.sampler_params, cfg.batch_rays, device, timer)
        started = time.perf_counter()
        counts = _render_shards(job, mine, renderer, show=cfg.progress and rank == 0)
        elapsed = time.perf_counter() - started
        barrier()
        if rank == 0:
            job.finalize()
        barrier()
        written, skipped = all_reduce(list(counts), "sum")
        (elapsed,) = all_reduce([elapsed], "max")
        times = all_reduce([timer.render, timer.encode, timer.write], "sum")
    rays = written * meta.height * meta.width
    metrics = {"n_views": meta.n_views, "n_shards": len(job.ranges), "written": int(written),
               "skipped": int(skipped), "complete": (out_dir / META_NAME).is_file(), "render_s": times[0],
               "encode_s": times[1], "write_s": times[2], "views_per_s": written / max(elapsed, 1e-9),
               "rays_per_s": rays / max(elapsed, 1e-9), "out_dir": str(out_dir), "rank": rank}
    log.info("pseudo-data: %s", metrics)
    return metrics


def _render_shards(job: JobFolder, indices: list[int], renderer: ShardRenderer,
                   show: bool) -> tuple[int, int]:
    """Render every incomplete shard of ``indices``; returns (views written, views skipped)."""
    todo = [i for i in indices if not job.is_complete(i)]
    skipped = sum(job.ranges[i][1] for i in indices if i not in todo)
    if skipped:
        log.info("%d shards already complete (hash verified), skipping them", len(indices) - len(todo))
    written = 0
    bar = tqdm(total=sum(job.ranges[i][1] for i in todo), unit="view", disable=not show,
               desc=f"pseudo-views -> {job.folder}", dynamic_ncols=True)
    with bar:
        for index in todo:
            job.clean_partial(index)
            first, n = job.ranges[index]
            sha = renderer.write(job.shard_path(index), first, n, on_view=lambda: bar.update(1))
            job.record(index, sha)
            written += n
    return written, skipped


@hydra.main(config_path="../conf", config_name="data_gen", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    """Hydra entry point: validate the config and :func:`run` it."""
    started = time.perf_counter()
    metrics = run(to_dataclass(cfg, DataGenConfig))
    if metrics.get("rank", 0) != 0:
        return
    if "verified" in metrics:
        print(f"verified {metrics['verified']} shards: no problems")
        return
    state = "complete, meta.json written" if metrics["complete"] else "partial (meta.json pending)"
    print(f"{metrics['out_dir']}: {metrics['written']} views rendered, {metrics['skipped']} skipped, "
          f"{state}; {metrics['views_per_s']:.1f} views/s, {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    check_command_line("data_gen")
    main()
