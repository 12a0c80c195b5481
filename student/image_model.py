"""The image student: camera in, image out, one network evaluation per ``s x s`` block of pixels.

MobileR2L's and LightSpeed's design for devices, in plain ops: a ray map at ``1/s`` of the output
(:mod:`student.ray_map`), ``K`` points per ray inside the content box, tri-plane features at each point
(:mod:`student.planes`) stacked along channels with the ray's direction, a body of 1x1 convolutions (a
per-ray MLP, residual), and an upsampling tail of convolutions and pixel shuffles (``DepthToSpace``) in
which only a few channels reach the full resolution. Every op is in the portable set (Conv, GridSample,
DepthToSpace, elementwise math, slices and reshapes), so one ONNX file runs on every provider.

Any output size works: the network draws ``ceil(H / s) x ceil(W / s)`` blocks and the image is cut to
``H x W`` (the blocks past the right and bottom edges are drawn and dropped).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.checks import ConfigValueError, at_least, one_of, validate
from core.ndc import NDCSpace
from student.planes import PlaneEncoding
from student.ray_map import (
    block_centers,
    block_rays,
    box_coords,
    box_segment,
    ndc_ray_map,
    normalize_points,
    pixel_centers,
)

ACTIVATIONS = ("gelu", "relu", "leaky_relu")


@dataclass
class ImageStudentConfig:
    """Shape of an image student.

    Attributes:
        scale: ``s``: one ray per ``s x s`` output pixels (a power of two >= 2).
        n_points: ``K`` points per ray inside the content box.
        channels: features per plane and level.
        resolutions: plane resolution of each level.
        width: channels of the 1x1 body.
        depth: residual 1x1 layers of the body.
        tail: channels of the upsampling stages below the ray map's resolution.
        tail_kernels: kernel size (1 or 3) of each upsampling stage's convolution, coarse to fine, one a
            stage (``log2(scale)`` of them); empty: 3x3 at every stage but the last, 1x1 at the last.
        separable: each 3x3 stage as a depthwise 3x3 convolution followed by a 1x1 one (MobileNet's
            factorisation: about 8x fewer operations for the 96-channel map).
        activation: ``gelu`` (MobileR2L's; exported as Erf arithmetic), ``relu`` or ``leaky_relu``.
        detail_channels: features per plane of the full-resolution detail tri-plane (``0``: none). With
            detail, the body also predicts a depth for each output pixel (``s x s`` values per ray, in
            the block ray's box segment), every pixel reads the detail planes once at its own ray's
            point at that depth, and a per-pixel head of 1x1 convolutions mixes those features with
            the upsampled ones: the pixel-level texture a ray map at ``1/s`` cannot carry.
        detail_resolution: resolution of the detail planes.
        head: channels that reach the full resolution and width of the per-pixel head (with detail).
    """

    scale: int = 8
    n_points: int = 8
    channels: int = 16
    resolutions: list[int] = field(default_factory=lambda: [256])
    width: int = 96
    depth: int = 3
    tail: int = 32
    tail_kernels: list[int] = field(default_factory=list)
    separable: bool = False
    activation: str = "gelu"
    detail_channels: int = 0
    detail_resolution: int = 256
    head: int = 16

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for a shape the model cannot take."""
        if self.scale < 2 or self.scale & (self.scale - 1):
            raise ConfigValueError("scale", "must be a power of two >= 2", self.scale)
        one_of(self, "activation", ACTIVATIONS)
        at_least(self, 1, "n_points", "channels", "width", "tail", "head")
        at_least(self, 0, "depth", "detail_channels")
        at_least(self, 2, "detail_resolution")
        stages = int(math.log2(self.scale))
        if self.tail_kernels and (len(self.tail_kernels) != stages or set(self.tail_kernels) - {1, 3}):
            raise ConfigValueError("tail_kernels", f"must list {stages} kernel sizes (1 or 3), one for each "
                                   f"upsampling stage of scale {self.scale}, or none", self.tail_kernels)
        check_resolutions("resolutions", self.resolutions)


def check_resolutions(key: str, resolutions: list[int]) -> None:
    """Raise :class:`core.checks.ConfigValueError` (``key``) unless ``resolutions`` lists at least one
    plane resolution, each >= 2."""
    if not resolutions or min(resolutions) < 2:
        raise ConfigValueError(key, "must list at least one plane resolution, each >= 2", resolutions)


def _act(name: str) -> nn.Module:
    return {"gelu": nn.GELU(), "relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(0.1)}[name]


def to_color(x: Tensor, training: bool) -> Tensor:
    """Network output -> color: ``x + 0.5``, clipped to ``[0, 1]`` outside training.

    Not a sigmoid: on object scenes most pixels are the flat background, which drives a sigmoid's shared
    bias into saturation early, where its gradient vanishes for every pixel and the whole network stops
    learning (measured: constant images at 13.5 dB on the demo). The unclipped output keeps the gradient
    of every pixel during training; evaluation and the exported graph (a ``Clip``) clip.
    """
    x = x + 0.5
    return x if training else x.clamp(0.0, 1.0)


class ImageDecoder(nn.Module):
    """Ray-map features ``[B, C_in, h, w]`` -> full-resolution features ``[B, C_out, h*s, w*s]``.

    The body is a per-ray MLP as 1x1 convolutions (``x + act(conv(x))``); each tail stage doubles the
    resolution with a convolution to ``4 x`` channels and ``DepthToSpace(2)``: 3x3 convolutions while the
    map is coarse (they mix neighbouring rays), a 1x1 one for the last stage (the full-resolution pixels
    are the most numerous: the speed study's fastest tail). The last stage gives the colors' 3 channels
    (before :func:`to_color`), or ``head`` activated features for the detail head.
    """

    def __init__(self, in_dim: int, cfg: ImageStudentConfig):
        super().__init__()
        stages = int(math.log2(cfg.scale))
        self.detail = cfg.detail_channels > 0
        self.inp = nn.Conv2d(in_dim, cfg.width, 1)
        self.body = nn.ModuleList(nn.Conv2d(cfg.width, cfg.width, 1) for _ in range(cfg.depth))
        self.act = _act(cfg.activation)
        ups: list[nn.Module] = []
        ch = cfg.width
        kernels = cfg.tail_kernels or [3] * (stages - 1) + [1]
        for i, k in enumerate(kernels):
            last = i == stages - 1
            out = (cfg.head if self.detail else 3) if last else cfg.tail
            if k == 3 and cfg.separable:
                depthwise = nn.Conv2d(ch, ch, 3, padding=1, groups=ch)
                ups.append(nn.Sequential(depthwise, nn.Conv2d(ch, 4 * out, 1)))
            else:
                ups.append(nn.Conv2d(ch, 4 * out, k, padding=k // 2))
            ch = out
        self.ups = nn.ModuleList(ups)
        self.fused_last: nn.Conv2d | None = None  # fuse_last_stages: for inference (the exported graph)

    @torch.no_grad()
    def fuse_last_stages(self) -> bool:
        """Fold the last (1x1) stage into the one before it, for inference: the stage before stops short of
        its ``DepthToSpace(2)``, and one 1x1 convolution to ``16 x 3`` channels (the last stage's weights
        at each of the 2x2 positions: a block-sparse matrix) and one ``DepthToSpace(4)`` give the same
        colors. ONNX Runtime's ``DepthToSpace`` is a strided copy: this spares the copy of the widest map
        (the tail's channels at half the output resolution) and the last stage's full-resolution one.

        Call on a copy that will not be trained (the export's): the fused weights are a snapshot. Returns
        whether it fused (not with a detail head, one stage, or a 3x3 last stage)."""
        last = self.ups[-1]
        if self.detail or len(self.ups) < 2 or not isinstance(last, nn.Conv2d) or last.kernel_size != (1, 1):
            return False
        w, bias = last.weight[:, :, 0, 0], last.bias  # [4 * out, T]: row c * 4 + q2 (pixel_shuffle's order)
        assert bias is not None  # every stage is built with its bias
        out, T = w.shape[0] // 4, w.shape[1]
        fused = nn.Conv2d(4 * T, 16 * out, 1).to(w.device)
        fused.weight.zero_()
        assert fused.bias is not None
        t = torch.arange(T, device=w.device)
        for c, dy1, dx1, dy2, dx2 in itertools.product(range(out), range(2), range(2), range(2), range(2)):
            row = c * 16 + (2 * dy1 + dy2) * 4 + (2 * dx1 + dx2)  # DepthToSpace(4)'s order
            src = c * 4 + dy2 * 2 + dx2
            fused.weight[row, t * 4 + dy1 * 2 + dx1, 0, 0] = w[src]  # the input's 2x2 position dy1, dx1
            fused.bias[row] = bias[src]
        self.fused_last = fused
        return True

    def trunk(self, x: Tensor) -> Tensor:  # [B, C_in, h, w] -> [B, width, h, w]
        """The body: per-ray features."""
        x = self.act(self.inp(x))
        for layer in self.body:
            x = x + self.act(layer(x))
        return x

    def upsample(self, x: Tensor) -> Tensor:  # [B, width, h, w] -> [B, 3 or head, h*s, w*s]
        """The tail."""
        fused = self.fused_last is not None  # fuse_last_stages: the last stage is fused_last
        assert not (fused and self.training), "a decoder with fused last stages is for inference only"
        ups = self.ups[:-1] if fused else self.ups
        for i, up in enumerate(ups):
            x = up(x)
            if not (fused and i == len(ups) - 1):  # the fused stage reads the map before its DepthToSpace
                x = F.pixel_shuffle(x, 2)
            if i < len(self.ups) - 1 or self.detail:
                x = self.act(x)
        return F.pixel_shuffle(self.fused_last(x), 4) if self.fused_last is not None else x


class DetailHead(nn.Module):
    """The full-resolution detail of :class:`ImageStudent` (``detail_channels > 0``): a per-pixel depth
    from the body, one tri-plane lookup per pixel there, and a per-pixel head of 1x1 convolutions."""

    def __init__(self, cfg: ImageStudentConfig):
        super().__init__()
        self.scale = cfg.scale
        self.depth = nn.Conv2d(cfg.width, cfg.scale ** 2, 1)  # s x s depths per ray (DepthToSpace order)
        self.planes = PlaneEncoding(cfg.detail_channels, [cfg.detail_resolution])
        self.mix = nn.Conv2d(cfg.head + cfg.detail_channels, cfg.head, 1)
        self.out = nn.Conv2d(cfg.head, 3, 1)
        self.act = _act(cfg.activation)

    def pixel_depth(self, trunk: Tensor, t_near: Tensor, t_far: Tensor) -> Tensor:
        """``[B, 1, h*s, w*s]`` distances along each pixel's ray, inside its block ray's box segment
        (``t_near``, ``t_far``: ``[B, 1, h, w]``)."""
        frac = torch.sigmoid(self.depth(trunk))  # [B, s*s, h, w]
        return F.pixel_shuffle(t_near + frac * (t_far - t_near), self.scale)

    def forward(self, up: Tensor, rays_o: Tensor, rays_d: Tensor, t: Tensor, aabb: Tensor) -> Tensor:
        """Colors ``[B, 3, H', W']`` (before :func:`to_color`) from the tail's ``up [B, head, H', W']``,
        the pixels' rays (``rays_o [B, 1, 1, 3]``, ``rays_d [B, H', W', 3]``), depths ``t [B, 1, H', W']``."""
        pts = normalize_points(rays_o + rays_d * t.permute(0, 2, 3, 1), aabb)  # [B, H', W', 3]
        x = torch.cat((up, self.planes(pts)), dim=1)
        return self.out(self.act(self.mix(x)))


class ImageStudent(nn.Module):
    """Camera in, image out (:mod:`student.image_model`).

    A forward-facing scene's student (``ndc``) places its points and planes in the NDC frame: each block
    ray is mapped to NDC in the graph (:func:`student.ray_map.ndc_ray_map`), its ``K`` points are spread
    evenly in NDC depth (evenly in disparity, from the near plane to infinity) and the planes cover the
    NDC box; the body still reads the world direction.

    Args:
        cfg: the shape.
        aabb: ``[6]`` content box that the planes cover (world frame; with ``ndc``, the NDC box).
        ndc: the NDC frame of a forward-facing scene (``None``: an object scene, world rays).

    Raises:
        core.checks.ConfigValueError: a detail head with ``ndc`` (its depths are world distances).
    """

    def __init__(self, cfg: ImageStudentConfig, aabb: list[float], ndc: NDCSpace | None = None):
        super().__init__()
        validate(cfg, "model.image.")  # also a config read from a checkpoint
        if ndc is not None and cfg.detail_channels > 0:
            raise ConfigValueError("model.image.detail_channels", "must be 0 for a forward-facing (NDC) "
                                   "scene: the detail head reads world depths", cfg.detail_channels)
        self.cfg = cfg
        self.ndc = ndc
        self.aabb: Tensor
        self.frac: Tensor
        self.register_buffer("aabb", torch.tensor(aabb, dtype=torch.float32))
        self.register_buffer("frac", (torch.arange(cfg.n_points, dtype=torch.float32) + 0.5) / cfg.n_points)
        self.encoding = PlaneEncoding(cfg.channels, cfg.resolutions)
        self.decoder = ImageDecoder(cfg.n_points * self.encoding.out_dim + 3, cfg)
        self.detail = DetailHead(cfg) if cfg.detail_channels > 0 else None

    def blocks(self, H: int, W: int) -> tuple[int, int]:
        """Ray-map size ``(ceil(H / s), ceil(W / s))`` of an ``H x W`` output."""
        s = self.cfg.scale
        return -(-H // s), -(-W // s)

    def forward(self, c2w: Tensor, K: Tensor, centers: Tensor) -> Tensor:
        """Colors of the ``s x s`` blocks around ``centers``.

        Args:
            c2w: ``[B, 4, 4]`` poses.
            K: ``[B, 3, 3]`` intrinsics (pixels of the output image).
            centers: ``[h, w, 2]`` block centres (:func:`student.ray_map.block_centers`).

        Returns:
            ``[B, h*s, w*s, 3]`` colors.
        """
        return self.forward_with_depth(c2w, K, centers)[0]

    def forward_with_depth(self, c2w: Tensor, K: Tensor, centers: Tensor) -> tuple[Tensor, Tensor | None]:
        """:meth:`forward` and, with detail, the per-pixel depths ``[B, h*s, w*s]`` it read the detail
        planes at (distance along each pixel's unit ray; ``None`` without detail): the depth a
        teacher's depth supervises in training."""
        rays_o, rays_d = block_rays(c2w, K, centers)  # [B, 1, 1, 3], [B, h, w, 3]
        B, h, w, _ = rays_d.shape
        box_o, box_d = (rays_o, rays_d) if self.ndc is None else ndc_ray_map(rays_o, rays_d, self.ndc)
        t_near, t_far = box_segment(box_o, box_d, self.aabb)  # [B, h, w, 1]
        coords = box_coords(box_o, box_d, t_near, t_far, self.aabb, self.frac)  # 3 x [B, K, h, w]
        k = coords[0].shape[1]
        x, y, z = (c.reshape(B, k * h, w) for c in coords)  # the points of one depth as one image row-band
        feats = self.encoding.read((x, y, z))  # [B, C, K*h, w]
        feats = feats.reshape(B, -1, h, w)  # channel = c * K + k
        trunk = self.decoder.trunk(torch.cat((feats, rays_d.permute(0, 3, 1, 2)), dim=1))
        up = self.decoder.upsample(trunk)
        if self.detail is None:
            return to_color(up, self.training).permute(0, 2, 3, 1), None
        depth = self.detail.pixel_depth(trunk, t_near.permute(0, 3, 1, 2), t_far.permute(0, 3, 1, 2))
        pix_o, pix_d = block_rays(c2w, K, pixel_centers(centers, self.cfg.scale))
        rgb = self.detail(up, pix_o, pix_d, depth, self.aabb)
        return to_color(rgb, self.training).permute(0, 2, 3, 1), depth[:, 0]

    def render(self, c2w: Tensor, K: Tensor, H: int, W: int) -> Tensor:
        """``[B, H, W, 3]`` whole images (the graph the export traces for one fixed size)."""
        h, w = self.blocks(H, W)
        centers = block_centers(h, w, self.cfg.scale).to(c2w.device)
        return self.forward(c2w, K, centers)[:, :H, :W]
