"""One training step of the CPU profile's image student, its plane lookups three ways: PyTorch's
``grid_sample`` reading the planes as one batch entry, the same split into several
(``student.planes.lookup_batches``), and our C++/OpenMP kernel (``cuda.planes``, what training uses on
the CPU).

``python -m benchmarks.image_train_step [--size 100] [--steps 40] [--repeats 3]``

The student's shape, crops per step and precision are the CPU profile's (``conf/``); the views are random
cameras around the content box (the test photos' rig) with random targets (a step's time does not depend
on the values). A step is the forward pass, the mean squared error, the backward pass and Adam. PyTorch's
CPU backward of ``grid_sample`` gives each batch entry one thread, and the student folds its whole batch
into one entry (one ``GridSample`` node a plane in the exported graph), so the reference path splits the
lookup; the kernel reads channels-last texels and gives each thread whole texel rows in its backward.
Prints one table and writes the ``image_train_step`` section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

import student.planes as planes_module
from benchmarks.results import markdown_table, write_section
from pipeline.config import compose, to_dataclass
from student.config import StudentConfig  # also registers the student's config for compose
from student.image_model import ImageStudent
from student.ray_map import block_centers
from testing.scenes.photos import intrinsics
from testing.scenes.rigs import photo_poses

LOOKUPS = {  # row name -> (batch entries a grid_sample lookup is split into at most, kernel on)
    "grid_sample, one entry": (1, False),
    f"grid_sample, split ({planes_module.MAX_LOOKUP_BATCHES})": (planes_module.MAX_LOOKUP_BATCHES, False),
    "kernel (cuda.planes)": (planes_module.MAX_LOOKUP_BATCHES, True),
}


@contextmanager
def lookup_split(limit: int, kernel: bool = False) -> Iterator[None]:
    """Inside the block, split ``grid_sample`` training lookups into at most ``limit`` batch entries, and
    use the kernel only if ``kernel``."""
    saved = planes_module.MAX_LOOKUP_BATCHES, planes_module.kernel_applies
    planes_module.MAX_LOOKUP_BATCHES = limit
    if not kernel:
        planes_module.kernel_applies = lambda planes, points: False
    try:
        yield
    finally:
        planes_module.MAX_LOOKUP_BATCHES, planes_module.kernel_applies = saved


def image_profile() -> StudentConfig:
    """The student stage's config of the CPU profile with the image decoder (``conf/``), typed."""
    return to_dataclass(compose("student", ["model.decoder=image", "model.encoding=planes"]), StudentConfig)


def training_step(model: ImageStudent, views: int, size: int, bf16: bool) -> Callable[[], None]:
    """One training step of ``model`` on ``views`` random ``size x size`` views, as a function."""
    g = torch.Generator().manual_seed(0)
    c2w, K = photo_poses(views, seed=0), intrinsics(size).expand(views, 3, 3)
    h, w = model.blocks(size, size)
    centers = block_centers(h, w, model.cfg.scale)
    target = torch.rand(views, h * model.cfg.scale, w * model.cfg.scale, 3, generator=g)
    opt = torch.optim.Adam(model.parameters(), 1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(c2w, K, centers)
        loss = ((out.float() - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def step_ms(steps: dict[str, Callable[[], None]], n: int, repeats: int) -> dict[str, float]:
    """Median over ``repeats`` of the mean ms of ``n`` steps, for each lookup's step (:data:`LOOKUPS`); the
    lookups take turns within each repeat, so that a change of the machine's load falls on all of them."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(repeats + 1):  # the first round warms up
        for name, step in steps.items():
            with lookup_split(*LOOKUPS[name]):
                start = time.perf_counter()
                for _ in range(n):
                    step()
                if r:
                    times[name].append((time.perf_counter() - start) / n * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=100, help="view side in pixels (the demo's: 100)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    cfg = image_profile()
    shape = cfg.model.image
    views, bf16 = int(cfg.train.crops.per_step), cfg.train.precision == "bf16"
    steps = {}
    for name in LOOKUPS:
        torch.manual_seed(0)
        model = ImageStudent(shape, [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]).train()
        steps[name] = training_step(model, views, args.size, bf16)
    ms = step_ms(steps, args.steps, args.repeats)
    base = ms[next(iter(LOOKUPS))]
    rows = [[name, round(t, 2), round(1e3 / t, 1), f"{base / t:.2f}x"] for name, t in ms.items()]
    table = markdown_table(["plane lookup", "ms a step", "steps/s", "speed-up"], rows)
    notes = (f"The CPU profile's image student (scale {shape.scale}, {shape.n_points} points a ray, "
             f"{shape.resolutions} px planes x {shape.channels} channels, "
             f"body {shape.width} x {shape.depth}), "
             f"{views} random {args.size}x{args.size} views a step, {'bf16 autocast' if bf16 else 'fp32'}, "
             f"Adam; the median of {args.repeats} means of {args.steps} steps, the lookups taking turns.")
    print(table)
    write_section("image_train_step", f"{notes}\n\n{table}\n")


if __name__ == "__main__":
    main()
