"""Typed configuration of the student stage: every key and its default (``conf/student.yaml`` composes it)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from core.checks import ConfigValueError, at_least, in_range, one_of, positive, training_limits
from pipeline.config import register_stage
from pipeline.run import RunConfig
from student.encoding import GridConfig
from student.image_model import check_resolutions
from student.model import AUTO, StudentModelConfig

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
        batch_size: rays per batch (``model.decoder=ray``; the image student's batches: ``train.crops``).
        val_every_steps: steps between validation passes (PSNR on a few test views).
    """

    enabled: bool = field(default=True, metadata={"provenance": False})
    max_steps: int = field(default=20000, metadata={"provenance": False})
    max_seconds: float | None = field(default=None, metadata={"provenance": False})
    lr: float = 5e-4
    encoding_lr: float | None = None
    lr_final: float = 5e-6
    warmup_steps: int = 500
    decay_steps: int | None = None
    batch_size: int = 4096
    val_every_steps: int = field(default=1000, metadata={"provenance": False})

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value or a stage without any limit."""
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
        """Raise :class:`core.checks.ConfigValueError` for a bad value."""
        in_range(self, 0.0, 1.0, "fraction")
        at_least(self, 1, "pool_size")


@dataclass
class CropConfig:
    """The image student's batches (``model.decoder=image``): random crops of whole views on its grid of
    ``s x s`` pixel blocks (``s``: ``model.image.scale``), moved by a random fraction of a block, a random
    view each (:mod:`student.image_data`).

    Attributes:
        blocks: side of a crop in blocks (a view with fewer blocks along a side is taken whole along it).
        per_step: crops per optimizer step (per process).
        context: blocks along each side of a crop that the decoder's convolutions read but the loss leaves
            out, so that every trained pixel sees the neighbours it has in a whole-view render (the 3x3
            tail stages reach 1.5 blocks at scale 8); a side on the view's edge is trained to its edge.
        jitter: move each crop by a random ``0 .. s-1`` pixels past its block offset, so that the decoder
            learns the views at every sub-block shift of its block grid, not at one
            (:meth:`student.image_data.CropGrid.draw`). Without it an image student learns its pseudo-views'
            poses rather than the scene: on the demo 25.69 dB without, 28.20 dB with, the same 320 s
            (``benchmarks/RESULTS.md``, section ``image_student_jitter``).
        depth_weight: weight of the depth loss of a student with a detail head
            (``model.image.detail_channels > 0``): the mean absolute difference between its per-pixel
            depth and the teacher's, over the pixels the teacher holds opaque (alpha > 0.5), beside the
            color loss. Needs pseudo-data with ``depth`` and ``alpha`` (``data_gen depth=true
            alpha=true``); the photos of ``finetune`` have none (color only). ``0``: color only.
    """

    blocks: int = 32
    per_step: int = 4
    context: int = 2
    jitter: bool = True
    depth_weight: float = 0.1

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value or a crop without trained blocks."""
        at_least(self, 1, "blocks", "per_step")
        at_least(self, 0, "context", "depth_weight")
        if self.blocks <= 2 * self.context:
            raise ConfigValueError("blocks", f"must be > 2 x context ({2 * self.context}): a crop needs "
                                   "trained blocks inside its context", self.blocks)


@dataclass
class StudentTrainConfig:
    """Settings shared by the stages.

    Attributes:
        distill: the pseudo-data stage.
        finetune: the real-photo stage.
        precision: ``"bf16"`` (autocast, fp32 master weights) or ``"fp32"``.
        devices: processes per node (DDP over the shards when > 1; gloo on CPU, NCCL on GPUs: the run
            section's ``device`` says which).
        num_nodes: machines (Lightning reads the cluster's environment: torchrun, SLURM, ...).
        num_workers: DataLoader workers decoding shards (per process; capped by the shards it reads).
        shuffle_buffer: rays held in the cross-view shuffle buffer (per worker).
        ray_cache_gb: the distill stage reads the shards once and holds their rays in memory when all
            of them take at most this many GiB (float32, 36 bytes a ray, in each process); else it
            streams them. ``0``: always stream.
        hard_mining: see :class:`HardMiningConfig` (``model.decoder=ray`` only: the image student's loss is
            taken over whole crops).
        crops: the image student's batches (:class:`CropConfig`).
        ckpt_every_steps: Lightning checkpoint interval (for resume after a kill).
        resume: resume an interrupted stage from its ``last.ckpt``.
        progress_bar: show Lightning's progress bar.
    """

    distill: StageConfig = field(default_factory=StageConfig)
    finetune: StageConfig = field(  # the distill stage's defaults, except:
        default_factory=lambda: StageConfig(max_steps=2000, lr=1e-4, lr_final=1e-6, warmup_steps=100,
                                            val_every_steps=500)
    )
    precision: str = "bf16"
    devices: int = field(default=1, metadata={"provenance": False})
    num_nodes: int = field(default=1, metadata={"provenance": False})
    num_workers: int = field(default=2, metadata={"provenance": False})
    shuffle_buffer: int = field(default=65536, metadata={"provenance": False})
    ray_cache_gb: float = field(default=2.0, metadata={"provenance": False})
    hard_mining: HardMiningConfig = field(default_factory=HardMiningConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    ckpt_every_steps: int = field(default=200, metadata={"provenance": False})
    resume: bool = field(default=True, metadata={"provenance": False})
    progress_bar: bool = field(default=True, metadata={"provenance": False})

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value."""
        one_of(self, "precision", PRECISIONS)
        at_least(self, 1, "devices", "num_nodes", "shuffle_buffer", "ckpt_every_steps")
        at_least(self, 0, "num_workers", "ray_cache_gb")


@dataclass
class StudentEvalConfig:
    """Test evaluation.

    Attributes:
        chunk: rays per forward pass of a ray student (big temporaries page-fault on small machines); an
            image student draws each view whole.
        max_views: test views evaluated (``null``: as many as the teacher's metrics report, else all).
        val_views: test views used for the quick validation passes during training.
        save_renders: write the side-by-side ``gt | teacher | student`` PNGs.
    """

    chunk: int = 4096
    max_views: int | None = None
    val_views: int = 4
    save_renders: bool = True

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value."""
        at_least(self, 1, "chunk", "max_views", "val_views")


@dataclass
class StudentForwardConfig:
    """What the student of a forward-facing scene does differently: the ``hash`` ray student's grid and
    width, the image student's plane resolutions (an object scene, and the ``pe`` student, ignore this
    group; :func:`for_scene`).

    A real forward-facing capture fills every pixel of a 504x378 photo with detail spread over the whole
    NDC box, where an object at 100 px occupies a small part of its box. On a real LLFF capture
    (``benchmarks/RESULTS.md``, section ``real_forward``; the student stage alone, the CPU profile's
    400 s, one run each) the object student (4 levels x 2 features, 2^17 entries, 16 to 128 cells,
    4 x 64) ends 2.09 dB below its teacher; 8 levels up to 512 cells 1.41 dB below with 2^17 entries,
    1.20 dB with 2^19, and 0.97 dB with 2^19 entries and a 4 x 128 MLP (these defaults). The cost: a
    table of 5.1 M parameters instead of 0.6 M (a 20 MB fp32 ONNX file) and twice the lookups a point.

    The image student's planes cover the NDC box, whose front plane spans the whole photo: 64 px planes
    (the object profile's) give a texel to 8 photo pixels there. On the same capture (section
    ``image_forward``; 100 pseudo-views of the photos' size, the CPU profile's 400 s) 128 px planes end
    1.41 dB below the teacher, 64 px ones 2.19 dB.

    The image student of such a scene is short of steps, not of capacity (section ``forward_default``):
    twice the CPU profile's 320 + 80 s takes it from 24.14 to 24.63 dB on the same capture (1.69 to 1.20 dB
    below the teacher), three times its distill to 24.70 dB, where on the demo its curve is flat. Twice
    (this default) keeps the whole demo command on a 504x378 capture within 25 minutes.

    Attributes:
        grid: the hash encoding's grid, in place of ``model.grid``.
        width: the MLP's hidden width, in place of ``model.width``.
        image_resolutions: the image student's plane resolutions, in place of
            ``model.image.resolutions``.
        seconds_factor: each stage trains for ``seconds_factor * train.<stage>.max_seconds`` (either
            student).
    """

    grid: GridConfig = field(
        default_factory=lambda: GridConfig(n_levels=8, log2_hashmap_size=19, max_resolution=512))
    width: int = 128
    image_resolutions: list[int] = field(default_factory=lambda: [128])
    seconds_factor: float = field(default=2.0, metadata={"provenance": False})

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad width, resolution or factor (``grid``
        checks itself)."""
        at_least(self, 1, "width")
        positive(self, "seconds_factor")
        check_resolutions("image_resolutions", self.image_resolutions)


@dataclass
class StudentConfig(RunConfig):
    """The ``student.train`` entry point: the run section (the scene's train photos feed ``finetune``,
    its test split the evaluation; ``run_dir``: reads ``<run_dir>/pseudo`` and ``<run_dir>/teacher``,
    writes ``<run_dir>/student``; ``device``: Lightning's accelerator), then the student's own.

    Attributes:
        pseudo_dir: pseudo-data folder (``null``: ``<run_dir>/pseudo``).
        model: network shape.
        train: training settings.
        eval: evaluation settings.
        forward: the student of a forward-facing scene (:class:`StudentForwardConfig`).
    """

    # the pseudo-data counts for provenance by its meta.json, not by where it lies
    pseudo_dir: str | None = field(default=None, metadata={"provenance": False})
    model: StudentModelConfig = field(default_factory=StudentModelConfig)
    train: StudentTrainConfig = field(default_factory=StudentTrainConfig)
    eval: StudentEvalConfig = field(default_factory=StudentEvalConfig, metadata={"provenance": False})
    # counts for provenance through the model section it fills in (for_scene), not by itself
    forward: StudentForwardConfig = field(default_factory=StudentForwardConfig,
                                          metadata={"provenance": False})


def for_scene(cfg: StudentConfig, forward_facing: bool) -> StudentConfig:
    """The config a scene's student is built and trained with: ``model.decoder=auto`` becomes the image
    decoder (``planes``) for a forward-facing scene and the ray decoder for an object; then, for a
    forward-facing scene, the ``hash`` ray student takes the ``forward`` group's grid and width, the image
    student its plane resolutions, and either student its ``seconds_factor`` x each stage's time. Any
    other student's model, and every object scene's config, as given (``cfg`` itself is returned when
    nothing changes)."""
    model = cfg.model
    if model.decoder == AUTO:
        model = dataclasses.replace(model, decoder="image", encoding="planes") if forward_facing \
            else dataclasses.replace(model, decoder="ray")
    if forward_facing and model.decoder == "image":
        model = dataclasses.replace(model, image=dataclasses.replace(
            model.image, resolutions=list(cfg.forward.image_resolutions)))
    elif forward_facing and model.decoder == "ray" and model.encoding == "hash":
        model = dataclasses.replace(model, grid=cfg.forward.grid, width=cfg.forward.width)
    train = cfg.train
    if forward_facing and cfg.forward.seconds_factor != 1:
        factor = cfg.forward.seconds_factor
        train = dataclasses.replace(train, distill=_longer(train.distill, factor),
                                    finetune=_longer(train.finetune, factor))
    if model is cfg.model and train is cfg.train:
        return cfg
    return dataclasses.replace(cfg, model=model, train=train)


def _longer(stage: StageConfig, factor: float) -> StageConfig:
    seconds = stage.max_seconds * factor if stage.max_seconds is not None else None
    return dataclasses.replace(stage, max_seconds=seconds)


register_stage("student", StudentConfig)
