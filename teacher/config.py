"""The teacher stage's config (``conf/teacher.yaml``): :class:`TeacherConfig` and its sub-configs.

Each default lives here once; the YAML profiles state only what they change. Shared by both training
loops: the Lightning one (:mod:`teacher.train`) and the NeRF-XL one (:mod:`teacher.xl.train`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from core.checks import at_least, in_range, one_of, positive, training_limits
from pipeline.config import register_stage
from pipeline.provenance import fingerprint, provenance_fields, scene_fingerprint
from pipeline.run import RunConfig
from scenes.load import Scene
from teacher.model import TeacherModelConfig
from teacher.recipe import OptimConfig


@dataclass
class DistributedConfig:
    """The ``distributed`` config group of the teacher.

    Attributes:
        partitions: number of spatial regions ``K`` (NeRF-XL). 1 is the ordinary teacher; ``K > 1``
            needs ``K`` processes (``torchrun --nproc_per_node=K``) or runs all regions in one
            process when launched without ``torchrun``.
        backend: ``auto`` (NCCL with CUDA, else gloo), ``gloo`` or ``nccl``.
        points_per_ray: samples per training ray used to place the median splits.
        split_rays: training rays sampled to place the splits.
        timeout_s: collective timeout in seconds.
    """

    partitions: int = 1
    backend: str = dataclasses.field(default="auto", metadata={"provenance": False})
    points_per_ray: int = 16
    split_rays: int = 8192
    timeout_s: float = dataclasses.field(default=600.0, metadata={"provenance": False})

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value."""
        at_least(self, 1, "partitions", "points_per_ray", "split_rays")
        one_of(self, "backend", ("auto", "gloo", "nccl"))
        positive(self, "timeout_s")


@dataclass
class TeacherTrainConfig:
    """Training loop.

    Attributes:
        max_steps: step budget (-1: none).
        max_seconds: wall-clock budget of training, evaluation excluded (None: none).
        batch_rays: rays per step.
        checkpoint_seconds: interval between resume checkpoints (``last.ckpt``).
        log_every: steps between logged metrics.
        progress_bar: show Lightning's progress bar.
    """

    max_steps: int = dataclasses.field(default=-1, metadata={"provenance": False})
    max_seconds: float | None = dataclasses.field(default=150.0, metadata={"provenance": False})
    batch_rays: int = 2048
    checkpoint_seconds: float = dataclasses.field(default=30.0, metadata={"provenance": False})
    log_every: int = dataclasses.field(default=10, metadata={"provenance": False})
    progress_bar: bool = dataclasses.field(default=True, metadata={"provenance": False})

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value or a run without any limit."""
        training_limits(self)
        positive(self, "checkpoint_seconds")
        at_least(self, 1, "batch_rays", "log_every")


@dataclass
class TeacherEvalConfig:
    """Evaluation on the test split (always the full split, full resolution).

    Attributes:
        chunk: rays rendered at once.
        n_renders: test views saved as PNG comparisons.
        progress_bar: show a progress bar.
    """

    chunk: int = 4096
    n_renders: int = 3
    progress_bar: bool = True

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value."""
        at_least(self, 1, "chunk")
        at_least(self, 0, "n_renders")


@dataclass
class ForwardConfig:
    """What the teacher of a forward-facing scene does differently (an object scene ignores this group).

    Every ray of a forward-facing capture crosses content from near to far: there is no empty surround
    for the occupancy grid to skip, and early in training the density is a fog that makes the marcher
    keep ~80 samples a ray (`benchmarks/RESULTS.md`, section `forward_teacher`).

    Attributes:
        seconds_factor: the scene trains for ``seconds_factor * train.max_seconds`` (a 504x378 capture of
            30 photos has ~6x the demo's rays).
        distortion: weight of mip-NeRF 360's distortion loss (:func:`core.rendering.distortion_packed`,
            mean over the rays; 0: off). It pulls each ray's weight into one short stretch, so the fog
            clears and the occupancy grid empties: ~10 samples a ray instead of ~40.
        distortion_start: fraction of the training budget after which the distortion loss applies. From
            the first step it collapses the initial fog wherever its weight happens to sit: on a scene
            with a far back wall that left sheets of floaters in front of it (26.8 dB against 38.7 dB
            when it starts at a quarter of the budget, once the photometric loss has placed the surfaces).
    """

    seconds_factor: float = dataclasses.field(default=2.0, metadata={"provenance": False})
    distortion: float = 0.01
    distortion_start: float = 0.25

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value."""
        positive(self, "seconds_factor")
        at_least(self, 0.0, "distortion")
        in_range(self, 0.0, 1.0, "distortion_start")


@dataclass
class TeacherConfig(RunConfig):
    """The ``teacher`` stage (``conf/teacher.yaml``): the run section, then the teacher's own."""

    model: TeacherModelConfig = dataclasses.field(default_factory=TeacherModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TeacherTrainConfig = dataclasses.field(default_factory=TeacherTrainConfig)
    eval: TeacherEvalConfig = dataclasses.field(default_factory=TeacherEvalConfig,
                                                metadata={"provenance": False})
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    forward: ForwardConfig = dataclasses.field(default_factory=ForwardConfig)


def teacher_provenance(cfg: TeacherConfig, scene: Scene) -> dict[str, Any]:
    """What a teacher is made from (:mod:`pipeline.provenance`): the scene's training views and the settings
    that shape its weights (model, optimizer, seed, rays per step, partitioning): the config's fields
    that count for provenance (:func:`pipeline.provenance.provenance_fields`: budgets, device, backend,
    render chunk, checkpoint interval and evaluation settings are marked as not counting), and for a
    forward-facing scene its ``forward`` group."""
    counted = provenance_fields(cfg)
    dist = counted["distributed"]
    partitions = {"k": dist.pop("partitions"), **dist} if cfg.distributed.partitions > 1 else None
    forward = {"forward": counted["forward"]} if scene.ndc is not None else {}  # objects ignore the group
    return fingerprint(scene=scene_fingerprint(scene), model=counted["model"], optim=counted["optim"],
                       seed=counted["seed"], **counted["train"], partitions=partitions, **forward)


register_stage("teacher", TeacherConfig)
