"""``TeacherField``: the Instant-NGP radiance field (hash grid + two small MLPs).

Points are normalised by the scene box into ``[0, 1]^3`` and encoded by the :class:`HashGrid`; a density
MLP (one hidden layer of 64, 16 outputs) gives the density through a truncated exponential (its first
output) and 16 geometry features; a color MLP (two hidden layers of 64, sigmoid) maps those features
and the degree-4 spherical-harmonics encoding of the view direction to RGB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from core.checks import at_least, one_of
from cuda.backend import HashGrid, HashGridConfig, backend_names

SH_DIM = 16  # degree 4: 1 + 3 + 5 + 7 coefficients


@dataclass
class FieldConfig:
    """Shape of the radiance field.

    Attributes:
        grid: the hash grid and its backend (Instant-NGP's by default).
        hidden_dim: width of both MLPs.
        geo_dim: outputs of the density MLP (the first is the log-density).
    """

    grid: HashGridConfig = field(default_factory=HashGridConfig)
    hidden_dim: int = 64
    geo_dim: int = 16

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for an unusable MLP (``grid`` checks itself)."""
        at_least(self, 1, "hidden_dim", "geo_dim")


def validate_backend(cfg: object) -> None:
    """``cfg.backend`` is ``auto`` or a registered hash-grid backend (for a config naming the teacher's)."""
    one_of(cfg, "backend", backend_names())


class _TruncExp(torch.autograd.Function):
    """``exp`` whose gradient uses ``exp(clamp(x, -15, 15))`` (Instant-NGP's truncated exponential)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(-15.0, 15.0))


def trunc_exp(x: Tensor) -> Tensor:
    """Exponential with a clamped gradient (stable for large pre-activations)."""
    return _TruncExp.apply(x)  # type: ignore[no-any-return]


def sh_encode(dirs: Tensor) -> Tensor:
    """Real spherical harmonics up to degree 4 of unit directions (tiny-cuda-nn's basis and signs).

    Args:
        dirs: ``[S, 3]`` unit vectors.

    Returns:
        ``[S, 16]`` coefficients.
    """
    x, y, z = dirs.unbind(-1)
    xy, xz, yz = x * y, x * z, y * z
    x2, y2, z2 = x * x, y * y, z * z
    return torch.stack(
        [
            torch.full_like(x, 0.28209479177387814),
            -0.48860251190291987 * y,
            0.48860251190291987 * z,
            -0.48860251190291987 * x,
            1.0925484305920792 * xy,
            -1.0925484305920792 * yz,
            0.94617469575755997 * z2 - 0.31539156525251999,
            -1.0925484305920792 * xz,
            0.54627421529603959 * (x2 - y2),
            0.59004358992664352 * y * (-3.0 * x2 + y2),
            2.8906114426405538 * xy * z,
            0.45704579946446572 * y * (1.0 - 5.0 * z2),
            0.3731763325901154 * z * (5.0 * z2 - 3.0),
            0.45704579946446572 * x * (1.0 - 5.0 * z2),
            1.4453057213202769 * z * (x2 - y2),
            0.59004358992664352 * x * (-x2 + 3.0 * y2),
        ],
        dim=-1,
    )


class TeacherField(nn.Module):
    """Density and color of points in the scene box.

    Args:
        cfg: field shape.
        aabb: ``[6]`` scene box (points outside it have zero density).
    """

    aabb: Tensor

    def __init__(self, cfg: FieldConfig, aabb: Tensor):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone())
        self.grid = HashGrid(cfg.grid.spec(), backend=cfg.grid.backend, device=self.aabb.device)
        h = cfg.hidden_dim
        self.density_mlp = nn.Sequential(
            nn.Linear(self.grid.n_output_dims, h, bias=False),
            nn.ReLU(),
            nn.Linear(h, cfg.geo_dim, bias=False),
        )
        self.color_mlp = nn.Sequential(
            nn.Linear(SH_DIM + cfg.geo_dim, h, bias=False),
            nn.ReLU(),
            nn.Linear(h, h, bias=False),
            nn.ReLU(),
            nn.Linear(h, 3, bias=False),
        )

    def mlp_parameters(self) -> list[nn.Parameter]:
        """The MLP weights (weight decay applies to these, not to the hash table)."""
        return [*self.density_mlp.parameters(), *self.color_mlp.parameters()]

    def normalize(self, x: Tensor) -> Tensor:
        """World points ``[S, 3]`` -> box coordinates in ``[0, 1]^3`` (clamped)."""
        lo, hi = self.aabb[:3], self.aabb[3:]
        return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)

    def query_density(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Density and geometry features of world points.

        Args:
            x: ``[S, 3]`` points.

        Returns:
            ``sigmas [S]`` and ``geo [S, geo_dim]`` (input of :meth:`query_color`).
        """
        lo, hi = self.aabb[:3], self.aabb[3:]
        inside = ((x >= lo) & (x <= hi)).all(dim=-1)
        geo = self.density_mlp(self.grid(self.normalize(x)))
        sigmas = trunc_exp(geo[:, 0]) * inside
        return sigmas, geo

    def query_color(self, geo: Tensor, dirs: Tensor) -> Tensor:
        """RGB ``[S, 3]`` from geometry features ``[S, geo_dim]`` and unit view directions ``[S, 3]``."""
        return torch.sigmoid(self.color_mlp(torch.cat([sh_encode(dirs), geo], dim=-1)))

    def forward(self, x: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        """``sigmas [S]`` and ``rgbs [S, 3]`` of points ``x [S, 3]`` seen along ``dirs [S, 3]``."""
        sigmas, geo = self.query_density(x)
        return sigmas, self.query_color(geo, dirs)
