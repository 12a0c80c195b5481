"""Training loop of the NeRF-XL partitioned teacher, one region per rank or all regions in one process.

``torchrun --nproc_per_node=K -m teacher.train distributed.partitions=K`` runs one region per process
(gloo on the CPU, NCCL with one GPU per process); ``python -m teacher.train distributed.partitions=K``
runs the same ``K`` regions in one process. Both draw the same ray batches, backgrounds, sample jitter
and occupancy cells from the same seeds, and compute the same gradients (each rank's loss is the
single-device loss with the other regions' records as constants, :func:`teacher.xl.model.
substitute_own_record`), so they train the same parameters. A plain loop rather than Lightning: its
DDP strategy would average gradients of *different* parameters across ranks. What is not NeRF-XL (the
learning-rate decay, optimizer and random-background target) is the plain teacher's recipe,
:mod:`teacher.recipe`, and the wall-clock budget the training shell's, :class:`training.budget.Budget`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm import tqdm

from core.errors import UserError, raise_if_diverged
from pipeline.run import apply_threads, resolve_device
from scenes.load import SceneSplit
from teacher.config import TeacherConfig, teacher_provenance
from teacher.data import rays_with_pixels
from teacher.model import Teacher, TeacherModelConfig
from teacher.protocol import RayRenderer
from teacher.recipe import OptimConfig, lr_factor, make_optimizer, target_on_background
from teacher.xl.checkpoint import load_region, merge_regions, resume_point, save_region
from teacher.xl.distributed import RegionWorker
from teacher.xl.geometry import median_split_boxes, sample_points_along_rays
from teacher.xl.model import (
    PartitionedTeacher,
    build_region,
    init_seed,
    region_seed,
    update_region_occupancy,
)
from training.budget import Budget
from training.distributed import barrier, broadcast_tensor, join_process_group, launched_by_torchrun

log = logging.getLogger(__name__)


class Renderer(RayRenderer, Protocol):
    """What trains the regions: the in-process :class:`PartitionedTeacher` or this rank's worker."""

    def render_chunk(self, rays_o: Tensor, rays_d: Tensor, background: Tensor, seed: int | None = None,
                     ) -> dict[str, Tensor]: ...


@dataclass
class PartitionedSetup:
    """What one process trains: its regions (all, or its rank's), their renderer and optimizers.

    One optimizer per region (Adam is per parameter, so this is the same update as one over all of them):
    its state is saved and restored with the region, whichever process holds it.
    """

    regions: dict[int, Teacher]
    renderer: Renderer
    optimizers: dict[int, torch.optim.Optimizer]
    boxes: Tensor
    rank: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)  # stored in teacher.ckpt (pipeline.provenance)
    timings: dict[str, float] = field(default_factory=lambda: {"step": 0.0, "exchange": 0.0})


def partition_boxes(rays: tuple[Tensor, Tensor, Tensor], aabb: Tensor, near: float, far: float,
                    n_regions: int, n_rays: int, points_per_ray: int, seed: int) -> Tensor:
    """Median-split boxes from points along training rays, preferring rays of opaque pixels.

    Rays whose pixel alpha is above 0.5 are used when there are any (RGBA captures: they cross the
    object); otherwise all rays. Deterministic for a ``seed``.
    """
    rays_o, rays_d, rgba = rays
    gen = torch.Generator().manual_seed(seed)
    opaque = rgba[:, 3] > 0.5
    pool = opaque.nonzero()[:, 0] if bool(opaque.any()) else torch.arange(rays_o.shape[0])
    idx = pool[torch.randint(0, pool.numel(), (n_rays,), generator=gen)]
    points = sample_points_along_rays(rays_o[idx], rays_d[idx], aabb.cpu(), points_per_ray, near, far, gen)
    return median_split_boxes(points, aabb, n_regions).float()


def build_setup(model_cfg: TeacherModelConfig, optim_cfg: OptimConfig, boxes: Tensor, aabb: Tensor,
                near: float, far: float, rank: int, world: int, device: torch.device, seed: int = 0,
                ) -> PartitionedSetup:
    """Regions, renderer and optimizer of this process (``world == 1``: every region here)."""
    if world == 1:
        teacher = PartitionedTeacher(model_cfg, boxes, aabb, near, far, seed).to(device)
        regions = dict(enumerate(teacher.region_list))
        renderer: Renderer = teacher
    else:
        region = build_region(model_cfg, boxes[rank], aabb, near, far, init_seed(seed, rank)).to(device)
        regions = {rank: region}
        renderer = RegionWorker(region, rank, boxes.to(device), near, far)
    optimizers = {k: make_optimizer(region, optim_cfg) for k, region in regions.items()}
    return PartitionedSetup(regions, renderer, optimizers, boxes, rank)


def batch_at(rays: tuple[Tensor, Tensor, Tensor], batch_size: int, seed: int, step: int,
             device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Batch ``step`` of random rays and their random backgrounds (identical on every rank).

    Returns:
        ``rays_o [B, 3]``, ``rays_d [B, 3]``, ``target [B, 3]`` (pixel on the background) and
        ``background [B, 3]``.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = torch.randint(0, rays[0].shape[0], (batch_size,), generator=gen)
    rays_o, rays_d, rgba = (t[idx].to(device) for t in rays)
    background = torch.rand(batch_size, 3, generator=gen).to(device)
    return rays_o, rays_d, target_on_background(rgba, background), background


def train_step(setup: PartitionedSetup, batch: tuple[Tensor, Tensor, Tensor, Tensor], step: int, seed: int,
               lr_scale: float, base_lr: float) -> dict[str, float]:
    """One optimisation step of this process's regions (collective when distributed)."""
    start = time.perf_counter()
    for k, region in setup.regions.items():
        update_region_occupancy(region, step, region_seed(seed, step, k) + 7919)
    for optimizer in setup.optimizers.values():
        for group in optimizer.param_groups:
            group["lr"] = base_lr * lr_scale
        optimizer.zero_grad(set_to_none=True)
    rays_o, rays_d, target, background = batch
    out = setup.renderer.render_chunk(rays_o, rays_d, background, seed=region_seed(seed, step, 0))
    loss = torch.nn.functional.mse_loss(out["rgb"], target)
    raise_if_diverged(float(loss.detach()), "teacher (NeRF-XL)", step)  # the same loss on every rank
    loss.backward()
    for optimizer in setup.optimizers.values():
        optimizer.step()
    exchange = float(out.get("exchange_seconds", torch.tensor(0.0)))
    setup.timings["step"] += time.perf_counter() - start
    setup.timings["exchange"] += exchange
    return {"loss": float(loss.detach()), "samples_per_ray": float(out["n_samples"]) / rays_o.shape[0],
            "exchange_seconds": exchange}


def checkpoint(setup: PartitionedSetup, folder: Path, model_cfg: TeacherModelConfig, aabb: Tensor,
               near: float, far: float, step: int, world: int, **extra: Any) -> None:
    """Every rank writes its regions of ``step``; rank 0 merges them into ``teacher.ckpt``."""
    for k, region in setup.regions.items():
        save_region(folder, k, region, setup.optimizers[k], step)
    barrier()
    if setup.rank == 0:
        merge_regions(folder, model_cfg, setup.boxes, aabb, near, far, step, provenance=setup.provenance,
                      **extra)
    barrier()


def restore(setup: PartitionedSetup, folder: Path, step: int) -> int:
    """Resume this process's regions from the merged ``step`` (rank 0's :func:`resume_point`; 0: fresh)."""
    if step == 0:
        return 0
    for k, region in setup.regions.items():
        load_region(folder, k, region, setup.optimizers[k], step)
    log.info("resumed partitioned training at step %d", step)
    return step


def rank0_decision(value: int, device: torch.device) -> int:
    """Rank 0's decision (0 go on, 1 checkpoint, 2 stop), broadcast so every rank acts at the same step."""
    flag = torch.tensor([float(value)], device=device)
    return int(broadcast_tensor(flag, 0).item())


def progress_bar(show: bool, start: int, total: int | None) -> tqdm:
    """Rank 0's bar; ``spr`` is samples per ray in this process's regions."""
    return tqdm(initial=start, total=total, desc="train (partitioned)", disable=not show, dynamic_ncols=True)


def training_rays(split: SceneSplit) -> tuple[Tensor, Tensor, Tensor]:
    """All training rays ``(rays_o, rays_d, rgba)`` of a scene split."""
    return rays_with_pixels(split)


def fit(setup: PartitionedSetup, cfg: TeacherConfig, rays: tuple[Tensor, Tensor, Tensor], folder: Path,
        aabb: Tensor, near: float, far: float, world: int, device: torch.device, resume_step: int = 0,
        ) -> dict[str, Any]:
    """Train until ``cfg.train.max_steps`` / ``max_seconds`` (resuming), checkpointing on the way.

    Rank 0 shows a progress bar and logs loss, samples per ray and exchange time every
    ``cfg.train.log_every`` steps to ``<folder>/logs/partitioned.csv``.

    Args:
        cfg: the teacher's config (``train``, ``optim``, ``model``, ``seed`` are read); the budget, learning
            rate decay, optimizer and targets are the plain teacher's (:mod:`teacher.recipe`,
            :mod:`training.budget`).
        resume_step: the merged step to resume from, the same on every rank (0: a fresh start).

    Returns:
        ``{"steps", "train_seconds", "exchange_fraction"}``.
    """
    step = restore(setup, folder, resume_step)
    budget = Budget(cfg.train.max_seconds, cfg.train.max_steps)
    budget.previous = _previous_seconds(folder) if step else 0.0
    budget.start()
    last_ckpt = time.perf_counter()
    max_steps = cfg.train.max_steps
    bar = progress_bar(setup.rank == 0 and cfg.train.progress_bar, step, max_steps if max_steps > 0 else None)
    while True:
        due = time.perf_counter() - last_ckpt >= cfg.train.checkpoint_seconds
        decision = rank0_decision(2 if budget.used_up(step) else int(due), device)
        if decision >= 1 and step > 0:
            checkpoint(setup, folder, cfg.model, aabb, near, far, step, world,
                       train_seconds=round(budget.elapsed, 2), finished=decision == 2)
            last_ckpt = time.perf_counter()
        if decision == 2:
            break
        batch = batch_at(rays, cfg.train.batch_rays, cfg.seed, step, device)
        scale = lr_factor(budget.progress(step), cfg.optim)
        stats = train_step(setup, batch, step, cfg.seed, scale, cfg.optim.lr)
        if setup.rank == 0 and step % max(cfg.train.log_every, 1) == 0:
            log_row(folder / "logs" / "partitioned.csv", step, stats)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{stats['loss']:.4f}", spr=f"{stats['samples_per_ray']:.0f}")
    bar.close()
    fraction = setup.timings["exchange"] / max(setup.timings["step"], 1e-9)
    return {"steps": step, "train_seconds": round(budget.elapsed, 2), "exchange_fraction": round(fraction, 4)}


def _join(cfg: TeacherConfig) -> tuple[int, int, torch.device]:
    """``(rank, world, device)``: the torchrun process group, or one process holding every region."""
    k = cfg.distributed.partitions
    if not launched_by_torchrun():
        return 0, 1, resolve_device(cfg.device)
    rank, world, device = join_process_group(cfg.distributed.backend, cfg.distributed.timeout_s)
    if world != k:
        raise UserError(f"torchrun started {world} processes but distributed.partitions={k}: the teacher "
                        f"runs one spatial region per process, so set distributed.partitions={world}")
    return rank, world, device


def log_row(path: Path, step: int, stats: dict[str, float]) -> None:
    """Append one row of training metrics (rank 0 only) to a CSV file, with a header when new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a") as fh:
        if new:
            fh.write("step," + ",".join(stats) + "\n")
        fh.write(f"{step}," + ",".join(f"{v:.6g}" for v in stats.values()) + "\n")


def _previous_seconds(folder: Path) -> float:
    payload = torch.load(folder / "teacher.ckpt", map_location="cpu", weights_only=True)
    return float(payload.get("train_seconds", 0.0))


def run_partitioned(cfg: TeacherConfig) -> dict[str, Any]:
    """``teacher.train.run`` for ``distributed.partitions > 1``: train, merge, evaluate.

    Under ``torchrun`` each of the ``K`` processes trains its region; without it one process trains all
    ``K``. Rank 0 writes ``teacher.ckpt`` (every region), ``metrics.json`` and the test renders.

    Returns:
        The metrics (on every rank).
    """
    from core.io import sha256_file, write_json
    from pipeline.provenance import check_or_record
    from pipeline.seeding import seed_everything
    from scenes.load import load_scene
    from teacher.evaluate import evaluate

    k = cfg.distributed.partitions
    rank, world, device = _join(cfg)
    seed_everything(cfg.seed)
    apply_threads(cfg.threads)
    out = Path(cfg.run_dir) / "teacher"
    scene = load_scene(cfg.scene, splits=("train", "test"))
    provenance = teacher_provenance(cfg, scene)
    check_or_record(out, provenance, [out / "teacher.ckpt"], f"delete {out} or use another run_dir",
                    record=rank == 0)
    done = _finished_metrics(out, cfg.train.max_steps, cfg.train.max_seconds)
    if done is not None:
        log.info("partitioned teacher already trained and evaluated: %s", out / "metrics.json")
        return done
    if scene.ndc is not None:
        raise UserError(f"{scene.root}: a forward-facing scene (NDC rays) cannot be partitioned yet; "
                        "train it with distributed.partitions=1 or set scene.kind=object")
    rays = training_rays(scene.split("train"))
    point = resume_point(out, k) if rank == 0 else None  # one rank checks (and sets aside) the files
    if point is not None:
        boxes = point[1]
    elif rank == 0:
        boxes = partition_boxes(rays, scene.aabb, scene.near, scene.far, k, cfg.distributed.split_rays,
                                cfg.distributed.points_per_ray, cfg.seed)
    else:
        boxes = torch.zeros(k, 6)  # filled by rank 0's broadcast
    boxes = broadcast_tensor(boxes.to(device), 0).cpu()  # identical on every rank, whatever the float ops
    resume_step = torch.tensor([point[0] if point is not None else 0], device=device)
    resume_step = broadcast_tensor(resume_step, 0)
    setup = build_setup(cfg.model, cfg.optim, boxes, scene.aabb, scene.near, scene.far, rank, world, device,
                        cfg.seed)
    setup.provenance = provenance
    if cfg.model.occupancy.carve:  # each region's grid keeps the visual hull of the masks in its box
        train = scene.split("train")
        for region in setup.regions.values():
            region.carve_occupancy(train.c2w, train.K, train.images[..., 3])
    stats = fit(setup, cfg, rays, out, scene.aabb, scene.near, scene.far, world, device,
                int(resume_step.item()))
    test = evaluate(setup.renderer, scene.split("test"), scene.background, cfg.eval.chunk, cfg.eval.n_renders,
                    out / "renders" if rank == 0 else None, cfg.eval.progress_bar and rank == 0)
    ckpt = out / "teacher.ckpt"
    n_params = sum(p.numel() for r in setup.regions.values() for p in r.parameters())
    metrics = {"test": test, **stats, "backend": next(iter(setup.regions.values())).backend,
               "scene": scene.name, "partitions": k, "processes": world,
               "boxes": [[round(v, 5) for v in b] for b in boxes.tolist()],
               "n_params": n_params * k // len(setup.regions),
               "checkpoint_sha256": sha256_file(ckpt)}
    if rank == 0:
        write_json(out / "metrics.json", metrics)
        log.info("partitioned teacher (%d regions, %d processes): test PSNR %.2f dB -> %s", k, world,
                 test["psnr"], out / "metrics.json")
    barrier()
    return metrics


def _finished_metrics(out: Path, max_steps: int, max_seconds: float | None) -> dict[str, Any] | None:
    """The metrics of a run that used up this budget, was evaluated and is unchanged since, else None."""
    import json

    from core.io import sha256_file

    ckpt, metrics_path = out / "teacher.ckpt", out / "metrics.json"
    if not (ckpt.is_file() and metrics_path.is_file()):
        return None
    metrics: dict[str, Any] = json.loads(metrics_path.read_text())
    if metrics.get("checkpoint_sha256") != sha256_file(ckpt) or "partitions" not in metrics:
        return None
    spent = Budget(max_seconds, max_steps)  # the budget as the finished run left it
    spent.previous = float(metrics.get("train_seconds", 0.0))
    return metrics if spent.used_up(int(metrics.get("steps", 0))) else None
