"""Typed configuration of the student stage (``conf/student.yaml`` is checked against these)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config import at_least, in_range, one_of, positive, training_limits
from core.datasets import SceneConfig
from student.model import StudentModelConfig

PRECISIONS = {"bf16": "bf16-mixed", "fp32": "32-true"}  # train.precision -> Lightning's precision


@dataclass
class StageConfig:
    """One training stage (``distill`` on pseudo-data, ``finetune`` on the real photos).

    Attributes:
        enabled: run this stage.
        max_steps: optimizer steps (``-1``: no step limit).
        max_seconds: wall-clock limit of the stage (``null``: none); whichever limit comes first wins.
        lr: peak learning rate (Adam) of the network.
        encoding_lr: peak learning rate of a learned encoding's table (``null``: ``lr``); it follows
            the same warm-up and decay.
        lr_final: learning rate at the end of the schedule (cosine decay from ``lr``).
        warmup_steps: linear warm-up from ``lr / 100``.
        decay_steps: length of the decay; ``null`` uses ``max_steps`` (or 10k without a step limit).
        batch_size: rays per batch.
        val_every_steps: steps between validation passes (PSNR on a few test views).
    """

    enabled: bool = True
    max_steps: int = 2000
    max_seconds: float | None = None
    lr: float = 1e-3
    encoding_lr: float | None = None
    lr_final: float = 1e-5
    warmup_steps: int = 100
    decay_steps: int | None = None
    batch_size: int = 4096
    val_every_steps: int = 500

    def validate(self) -> None:
        """Raise :class:`core.config.ConfigValueError` for a bad value or a stage without any limit."""
        training_limits(self)
        positive(self, "lr", "encoding_lr", "lr_final")
        at_least(self, 0, "warmup_steps")
        at_least(self, 1, "decay_steps", "batch_size", "val_every_steps")


@dataclass
class HardMiningConfig:
    """R2L's hard-ray mining: the highest-error rays of each batch are kept and replayed.

    Attributes:
        enabled: add ``fraction x batch_size`` pooled hard rays to every batch.
        fraction: share of the batch size added from the pool.
        pool_size: rays kept in the pool (the newest hardest rays replace the oldest).
    """

    enabled: bool = True
    fraction: float = 0.1
    pool_size: int = 65536

    def validate(self) -> None:
        """Raise :class:`core.config.ConfigValueError` for a bad value."""
        in_range(self, 0.0, 1.0, "fraction")
        at_least(self, 1, "pool_size")


@dataclass
class TrainConfig:
    """Settings shared by the stages.

    Attributes:
        distill: the pseudo-data stage.
        finetune: the real-photo stage.
        precision: ``"bf16"`` (autocast, fp32 master weights) or ``"fp32"``.
        devices: processes per node (DDP over the shards when > 1; gloo on CPU, NCCL on GPUs).
        num_nodes: machines (Lightning reads the cluster's environment: torchrun, SLURM, ...).
        accelerator: ``"cpu"``, ``"gpu"`` or ``"auto"``.
        num_workers: DataLoader workers decoding shards (per process; capped by the shards it reads).
        shuffle_buffer: rays held in the cross-view shuffle buffer (per worker).
        ray_cache_gb: the distill stage reads the shards once and holds their rays in memory when all
            of them take at most this many GiB (float32, 36 bytes a ray, in each process); else it
            streams them. ``0``: always stream.
        hard_mining: see :class:`HardMiningConfig`.
        ckpt_every_steps: Lightning checkpoint interval (for resume after a kill).
        resume: resume an interrupted stage from its ``last.ckpt``.
        progress_bar: show Lightning's progress bar.
        threads: torch intra-op threads (``null``: torch's default).
    """

    distill: StageConfig = field(default_factory=StageConfig)
    finetune: StageConfig = field(
        default_factory=lambda: StageConfig(max_steps=500, lr=2e-4, lr_final=1e-5, warmup_steps=20)
    )
    precision: str = "bf16"
    devices: int = 1
    num_nodes: int = 1
    accelerator: str = "cpu"
    num_workers: int = 2
    shuffle_buffer: int = 65536
    ray_cache_gb: float = 2.0
    hard_mining: HardMiningConfig = field(default_factory=HardMiningConfig)
    ckpt_every_steps: int = 200
    resume: bool = True
    progress_bar: bool = True
    threads: int | None = None

    def validate(self) -> None:
        """Raise :class:`core.config.ConfigValueError` for a bad value."""
        one_of(self, "precision", PRECISIONS)
        one_of(self, "accelerator", ("cpu", "gpu", "auto"))
        at_least(self, 1, "devices", "num_nodes", "shuffle_buffer", "ckpt_every_steps", "threads")
        at_least(self, 0, "num_workers", "ray_cache_gb")


@dataclass
class EvalConfig:
    """Test evaluation.

    Attributes:
        chunk: rays per forward pass (big temporaries page-fault on small machines).
        max_views: test views evaluated (``null``: as many as the teacher's metrics report, else all).
        val_views: test views used for the quick validation passes during training.
        save_renders: write the side-by-side ``gt | teacher | student`` PNGs.
    """

    chunk: int = 4096
    max_views: int | None = None
    val_views: int = 4
    save_renders: bool = True

    def validate(self) -> None:
        """Raise :class:`core.config.ConfigValueError` for a bad value."""
        at_least(self, 1, "chunk", "max_views", "val_views")


@dataclass
class StudentConfig:
    """The ``student.train`` entry point.

    Attributes:
        scene: the scene (its train photos feed ``finetune``, its test split the evaluation).
        run_dir: run folder; reads ``<run_dir>/pseudo`` and ``<run_dir>/teacher``, writes
            ``<run_dir>/student`` and ``<run_dir>/report.{md,html}``.
        pseudo_dir: pseudo-data folder (``null``: ``<run_dir>/pseudo``).
        model: network shape.
        train: training settings.
        eval: evaluation settings.
        seed: random seed.
    """

    scene: SceneConfig = field(default_factory=SceneConfig)
    run_dir: str = "runs/mic_100"
    pseudo_dir: str | None = None
    model: StudentModelConfig = field(
        default_factory=lambda: StudentModelConfig(n_points=16, n_freqs=10, width=128, depth=16)
    )
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
