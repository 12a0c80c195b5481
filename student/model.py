"""``R2LStudent``: ray encoding + a deep residual MLP that outputs a pixel color in one pass."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from core.checks import ConfigValueError, at_least, one_of, validate
from core.ndc import NDCSpace
from student.encoding import ENCODINGS, RAY_RANGES, GridConfig, HashRayEncoder, RayEncoder, point_features_dim
from student.image_model import ImageStudentConfig

# decoder -> the encodings it can take: ``ray`` evaluates the MLP once per pixel (R2L), ``image`` draws
# the view from a low-resolution ray map of plane features (:mod:`student.image_model`)
DECODERS: dict[str, tuple[str, ...]] = {"ray": ("pe", "hash"), "image": ("planes",)}
# ``auto``: the image student (planes) for a forward-facing scene, the ray student (``encoding``) for an
# object (:func:`student.config.for_scene` decides once the scene is known)
AUTO = "auto"


@dataclass
class StudentModelConfig:
    """Shape of the student.

    Attributes:
        decoder: ``"ray"`` (one MLP evaluation per pixel: R2L, the fields below), ``"image"`` (camera in,
            image out from a ray map at ``1/s`` of the output: :attr:`image`) or ``"auto"`` (the image
            decoder with ``planes`` for a forward-facing scene, the ray decoder with :attr:`encoding` for
            an object: :func:`student.config.for_scene`).
        encoding: ``"pe"`` (R2L's positional encoding of the points) or ``"hash"`` (learned hash-grid
            features at the points; see :class:`student.encoding.HashRayEncoder`), for ``decoder=ray``
            (and ``auto``'s objects); ``"planes"`` (learned tri-plane features) for ``decoder=image``.
        n_points: ``K`` points sampled per ray.
        n_freqs: positional-encoding octaves (``pe`` only).
        width: hidden width ``W``.
        depth: number of Linear layers in all: input layer + 2 per residual block + output layer
            (R2L's 88 = 1 + 2 x 43 + 1). Must be even and at least 4.
        ray_range: where the K points go: ``"box"`` (the part of each ray inside the content box) or
            ``"near_far"`` (R2L: the same ``[near, far]`` for every ray).
        grid: the ``hash`` encoding's grid (ignored by ``pe``).
        skip_empty: use the pseudo-data's empty-space grid (:mod:`core.skipgrid`), when it has one: rays
            whose K points all lie in cells the teacher left empty show the background, unevaluated.
        image: the image decoder's shape (``decoder=image`` only).
    """

    decoder: str = "ray"
    encoding: str = "pe"
    n_points: int = 16
    n_freqs: int = 10
    width: int = 256
    depth: int = 88
    ray_range: str = "box"
    grid: GridConfig = field(  # the student's grid: 4 x 2 features, 2^17 entries, 16 to 128 cells
        default_factory=lambda: GridConfig(n_levels=4, log2_hashmap_size=17, max_resolution=128))
    skip_empty: bool = True
    image: ImageStudentConfig = field(default_factory=ImageStudentConfig)

    @classmethod
    def from_dict(cls, d: dict) -> StudentModelConfig:
        """The config saved by ``dataclasses.asdict`` (a checkpoint from before encodings is ``pe``)."""
        d = dict(d)
        grid = GridConfig(**{**dataclasses.asdict(cls().grid), **d.pop("grid", {})})
        image = ImageStudentConfig(**d.pop("image", {}))
        return cls(**d, grid=grid, image=image)

    @property
    def n_blocks(self) -> int:
        return (self.depth - 2) // 2

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a bad value (``grid`` checks itself)."""
        one_of(self, "decoder", (*DECODERS, AUTO))
        one_of(self, "encoding", ENCODINGS)
        takes = DECODERS["ray" if self.decoder == AUTO else self.decoder]
        if self.encoding not in takes:
            raise ConfigValueError("encoding", f"cannot go with model.decoder={self.decoder} (it takes: "
                                   f"{', '.join(takes)})", self.encoding)
        one_of(self, "ray_range", RAY_RANGES)
        if self.depth < 4 or self.depth % 2:
            raise ConfigValueError("depth", "must be even and >= 4 (input, 2 per block, output)", self.depth)
        at_least(self, 1, "n_points", "width")
        at_least(self, 0, "n_freqs")


class ResidualBlock(nn.Module):
    """``relu(x + fc2(relu(fc1(x))))``; ``fc2`` starts small so a deep stack begins near identity."""

    def __init__(self, width: int, n_blocks: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
        fc2 = self.body[2]
        assert isinstance(fc2, nn.Linear)
        with torch.no_grad():
            fc2.weight.mul_(1.0 / math.sqrt(n_blocks))
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.body(x))


class R2LStudent(nn.Module):
    """The neural light field: rays in, colors out.

    Args:
        cfg: network shape.
        box: ``[6]`` content box: ray points are normalised by it, rays that miss it show ``background``.
        near: start of the ray range.
        far: end of the ray range.
        background: ``[3]`` color of rays that miss the content box.
        ndc: NDC frame of a forward-facing scene (``box``, ``near``, ``far`` in NDC; no ray misses).
        occupancy: ``[G, G, G]`` bool empty-space grid over ``box`` (dilated): rays none of whose points
            lies in a set cell show ``background`` too (:class:`student.encoding.RayEncoder`).
    """

    background: Tensor  # [3] (buffer)

    def __init__(self, cfg: StudentModelConfig, box: Tensor, near: float, far: float,
                 background: Sequence[float] = (1.0, 1.0, 1.0), ndc: NDCSpace | None = None,
                 occupancy: Tensor | None = None):
        super().__init__()
        validate(cfg, "model.")  # also a config read from a checkpoint
        self.cfg = cfg
        self.encoder: RayEncoder
        if cfg.encoding == "hash":
            self.encoder = HashRayEncoder(box, near, far, cfg.n_points, cfg.grid, cfg.ray_range, ndc,
                                          occupancy)
        else:
            self.encoder = RayEncoder(box, near, far, cfg.n_points, cfg.n_freqs, cfg.ray_range, ndc,
                                      occupancy)
        self.register_buffer("background", torch.tensor([float(v) for v in background]))
        self.head_in = nn.Sequential(nn.Linear(self.encoder.out_dim, cfg.width), nn.ReLU())
        self.blocks = nn.Sequential(*[ResidualBlock(cfg.width, cfg.n_blocks) for _ in range(cfg.n_blocks)])
        self.head_out = nn.Linear(cfg.width, 3)

    def forward_encoded(self, enc: Tensor) -> Tensor:
        """Encoded rays ``[N, in_dim]`` -> rgb ``[N, 3]`` in ``[0, 1]``."""
        return torch.sigmoid(self.head_out(self.blocks(self.head_in(enc))))

    def forward(self, rays_o: Tensor, rays_d: Tensor) -> Tensor:
        """``rays_o, rays_d [N, 3]`` (unit directions, world frame) -> rgb ``[N, 3]``.

        Ray points are jittered within their bins in training mode, bin centres in eval mode. Rays that
        miss the content box get the background color.
        """
        enc, hit = self.encoder(rays_o, rays_d, jitter=self.training)
        rgb = self.forward_encoded(enc)
        return torch.where(hit[:, None], rgb, self.background.to(rgb.dtype))


def count_linear_flops(model: nn.Module) -> int:
    """Multiply-add FLOPs (2 per MAC) per ray of all Linear layers of ``model``."""
    return sum(2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))


def encoding_dim(cfg: StudentModelConfig) -> int:
    """Closed-form width of the encoding (the first layer's input)."""
    if cfg.encoding == "hash":
        g = cfg.grid
        return cfg.n_points * g.n_levels * g.n_features + point_features_dim(cfg.n_points, g.point_freqs)
    return cfg.n_points * 3 * (1 + 2 * cfg.n_freqs)


def lookups_per_ray(cfg: StudentModelConfig) -> int:
    """Table rows read per ray (8 trilinear corners per point and level; 0 for ``pe``)."""
    return 8 * cfg.n_points * cfg.grid.n_levels if cfg.encoding == "hash" else 0


def table_params(cfg: StudentModelConfig) -> int:
    """Parameters of the encoding's feature table (0 for ``pe``)."""
    return cfg.grid.spec().n_params if cfg.encoding == "hash" else 0


def layer_shapes(cfg: StudentModelConfig) -> list[tuple[int, int]]:
    """Closed-form ``(in_features, out_features)`` of every Linear layer, input to output."""
    in_dim = encoding_dim(cfg)
    return [(in_dim, cfg.width)] + [(cfg.width, cfg.width)] * (cfg.depth - 2) + [(cfg.width, 3)]


def flops_per_ray(cfg: StudentModelConfig) -> int:
    """Closed-form FLOPs per ray of the MLP (2 per multiply-add; encoding and biases not counted)."""
    return sum(2 * i * o for i, o in layer_shapes(cfg))
