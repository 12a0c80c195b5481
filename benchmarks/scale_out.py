"""NeRF-XL partitioned teacher: traffic per ray and the exchange's share of a training step.

Runs ``--steps`` training steps of the partitioned teacher on the demo scene twice, in the same run:
``K`` gloo processes on this machine (one region each, torchrun's environment) and one process holding
all ``K`` regions (the baseline). It reports

* the bytes each rank sends per ray per region (the ``[N, 5]`` float32 record of the all-gather),
  against the 4 floats (segment color + transmittance) per ray that NeRF-XL's formulation needs and
  the per-sample alternative (color + density of every sample, NeRF-XL section 4.2), measured with the
  samples per ray of the same steps;
* the all-gather's time inside a step (which includes waiting for the slower rank), a bare all-gather
  of the same tensor after a barrier (pure transfer), and their share of the step time.

CPU/gloo figures: on this 2-core machine ``K`` ranks get one thread each and add no compute, so the
steps/s columns measure correctness and traffic, not speed-up.

    python benchmarks/scale_out.py [--steps 20] [--batch-rays 2048] [--partitions 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import markdown_table, write_section  # noqa: E402
from pipeline.config import to_dataclass  # noqa: E402
from pipeline.run import free_port  # noqa: E402
from scenes.load import load_scene  # noqa: E402
from teacher.config import TeacherConfig  # noqa: E402
from teacher.xl.model import SEGMENT_FIELDS  # noqa: E402
from teacher.xl.train import (  # noqa: E402
    batch_at,
    build_setup,
    partition_boxes,
    train_step,
    training_rays,
)
from testing.stages import compose

WARMUP = 3
NERF_XL_FLOATS = 4  # segment color (3) + transmittance (1) per ray per region
PER_SAMPLE_FLOATS = 4  # color (3) + density (1) of every sample


def load_cfg(args: argparse.Namespace) -> TeacherConfig:
    return to_dataclass(compose("teacher", [f"train.batch_rays={args.batch_rays}",
                                            f"distributed.partitions={args.partitions}",
                                            f"model.field.grid.backend={args.backend}"]), TeacherConfig)


def run_steps(cfg: TeacherConfig, rank: int, world: int, steps: int) -> dict[str, Any]:
    """Train ``steps`` steps with this process's regions; timings exclude the first ``WARMUP``."""
    scene = load_scene(cfg.scene, splits=("train",))
    rays = training_rays(scene.split("train"))
    k = cfg.distributed.partitions
    boxes = partition_boxes(rays, scene.aabb, scene.near, scene.far, k, cfg.distributed.split_rays,
                            cfg.distributed.points_per_ray, cfg.seed)
    device = torch.device("cpu")
    setup = build_setup(cfg.model, cfg.optim, boxes, scene.aabb, scene.near, scene.far, rank, world, device,
                        cfg.seed)
    samples = 0.0
    for step in range(steps):
        if step == WARMUP:
            setup.timings.update(step=0.0, exchange=0.0)
            samples = 0.0
        batch = batch_at(rays, cfg.train.batch_rays, cfg.seed, step, device)
        stats = train_step(setup, batch, step, cfg.seed, 1.0, cfg.optim.lr)
        samples += stats["samples_per_ray"]
    timed = steps - WARMUP
    result: dict[str, Any] = {
        "step_s": setup.timings["step"] / timed, "exchange_s": setup.timings["exchange"] / timed,
        "samples_per_ray": samples / timed / len(setup.regions), "backend": setup.regions[rank].backend,
    }
    if world > 1:
        result.update(bare_all_gather(cfg.train.batch_rays))
    return result


def bare_all_gather(n_rays: int, repeats: int = 20) -> dict[str, float]:
    """Time the all-gather of one step's records alone (after a barrier), and count its bytes."""
    import torch.distributed as dist

    from teacher.xl.distributed import all_gather_records

    record = torch.rand(n_rays, SEGMENT_FIELDS)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(repeats):
        all_gather_records(record)
    return {"bare_exchange_s": (time.perf_counter() - start) / repeats,
            "bytes_sent_per_ray": record.element_size() * record.shape[1]}


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo")
    try:
        result = run_steps(load_cfg(args), rank, world, args.steps)
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-rays", type=int, default=2048)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    k = args.partitions
    threads = torch.get_num_threads()
    single: dict[str, Any] = {"default": run_steps(load_cfg(args), 0, 1, args.steps)}
    torch.set_num_threads(1)
    single["1"] = run_steps(load_cfg(args), 0, 1, args.steps)
    torch.set_num_threads(threads)
    single["default_threads"] = threads
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(k, free_port(), args, tmp), nprocs=k, join=True)
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(k)]
    print(format_table(args, single, ranks))


def format_table(args: argparse.Namespace, single: dict[str, Any], ranks: list[dict[str, Any]]) -> str:
    """Print and record the table; returns it."""
    k = len(ranks)
    sent = ranks[0]["bytes_sent_per_ray"]
    spr = sum(r["samples_per_ray"] for r in ranks) / k
    traffic = markdown_table(
        ["exchange", "floats per ray per region", "bytes per ray per region", "vs this project"],
        [["this project: one all-gather of (C, T, depth sum)", SEGMENT_FIELDS, sent, "1.0x"],
         ["NeRF-XL eq. 4: (C, T)", NERF_XL_FLOATS, NERF_XL_FLOATS * 4, f"{NERF_XL_FLOATS * 4 / sent:.2f}x"],
         [f"per-sample color + density ({spr:.1f} samples/ray/region measured)",
          f"{PER_SAMPLE_FLOATS * spr:.0f}", f"{PER_SAMPLE_FLOATS * 4 * spr:.0f}",
          f"{PER_SAMPLE_FLOATS * 4 * spr / sent:.1f}x"]])
    step = max(r["step_s"] for r in ranks)
    base = single["default"]
    rows: list[list[object]] = [
        [f"1 process, {k} regions, {single['default_threads']} threads (baseline)",
         f"{base['step_s'] * 1e3:.0f}", "-", "-", "-", f"{1 / base['step_s']:.2f}", "1.00x"],
        [f"1 process, {k} regions, 1 thread", f"{single['1']['step_s'] * 1e3:.0f}", "-", "-", "-",
         f"{1 / single['1']['step_s']:.2f}", f"{base['step_s'] / single['1']['step_s']:.2f}x"],
    ]
    for r, res in enumerate(ranks):
        rows.append([f"rank {r} of {k} (gloo)", f"{res['step_s'] * 1e3:.0f}",
                     f"{res['exchange_s'] * 1e3:.1f}", f"{res['exchange_s'] / res['step_s']:.1%}",
                     f"{res['bare_exchange_s'] * 1e3:.2f} ({res['bare_exchange_s'] / res['step_s']:.2%})",
                     f"{1 / res['step_s']:.2f}", f"{base['step_s'] / step:.2f}x"])
    timing = markdown_table(["run", "step ms", "all-gather in step ms", "share of step",
                             "bare all-gather ms (share)", "steps/s", "steps/s vs baseline"], rows)
    body = (f"CPU/gloo figures, not a speed-up measurement: {k} ranks on this 2-core machine (one thread "
            f"each) against one process holding all {k} regions (with all threads, and with one). "
            f"Demo scene, "
            f"{args.batch_rays} rays per step, {args.steps} steps ({WARMUP} warm-up steps not timed), "
            f"hash-grid backend {ranks[0]['backend']}. Each rank sends {sent} bytes per ray per step "
            f"(forward only; the backward pass exchanges nothing) and receives {(k - 1) * sent}.\n\n"
            f"{traffic}\n\n\"All-gather in step\" includes waiting for the slower rank (load imbalance); "
            f"\"bare all-gather\" is the same collective after a barrier (transfer alone).\n\n{timing}\n")
    write_section("scale_out", body)
    return body


if __name__ == "__main__":
    main()
