"""The image student's tri-plane lookup on our C++/OpenMP kernel (``planes_cpu.cpp``), for the CPU.

:func:`student.planes.sample_planes` (PyTorch's ``grid_sample``) stays the reference and what the exported
graph computes. PyTorch's CPU ``grid_sample`` reads channels-first planes one channel at a time and its
backward gives each batch entry one thread; the kernel reads channels-last texels (one contiguous row of
``C`` floats a corner), and its backward gives each thread whole rows of texels (no atomics; the result
does not depend on the number of threads). ``benchmarks/RESULTS.md``, section ``image_train_step``, has
what that is worth a training step.

The kernel computes the gradient into the planes only: the points of an image student come from the
camera, which is not learnt. :func:`kernel_applies` says when a lookup may use it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from cuda.build import load_extension, try_load_extension


def kernel_applies(planes: Tensor, points: Tensor) -> bool:
    """Whether a lookup of ``planes`` at ``points`` may run on the kernel: float32 CPU tensors, points
    without a gradient, not inside an ONNX export (the graph holds ``GridSample``), and the kernel builds
    here (else one warning per process and the reference)."""
    if planes.device.type != "cpu" or points.device.type != "cpu" or planes.dtype != torch.float32:
        return False
    if points.dtype != torch.float32 or points.requires_grad or torch.onnx.is_in_onnx_export():
        return False
    return try_load_extension("planes") is not None


class _PlaneLookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, points: Tensor, table: Tensor, n_threads: int,  # type: ignore[override]
                ext: ModuleType) -> Tensor:
        ctx.save_for_backward(points)
        ctx.R, ctx.n_threads, ctx.ext = table.shape[1], n_threads, ext
        return ext.forward(points, table, n_threads)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (points,) = ctx.saved_tensors
        grad = ctx.ext.backward(points, grad_out.float().contiguous(), ctx.R, ctx.n_threads)
        return None, grad, None, None


def plane_lookup(planes: Tensor, points: Tensor, n_threads: int | None = None) -> Tensor:
    """Sum of the three bilinear lookups of a tri-plane, on the kernel (the values of
    :func:`student.planes.sample_planes` within float32 rounding).

    Args:
        planes: ``[3, C, R, R]`` float32 CPU tensor, the xy, xz and yz planes (the student's layout).
        points: ``[N, 3]`` float32 CPU points in ``[-1, 1]^3`` (outside reads zeros), without a gradient.
        n_threads: OpenMP threads (default ``torch.get_num_threads()``).

    Returns:
        ``[N, C]`` features; differentiable in ``planes``.

    Raises:
        ValueError: wrong dtype, shape, device, or points that require a gradient.
        cuda.build.KernelBuildError: the kernel cannot be built here.
    """
    square = planes.dim() == 4 and planes.shape[0] == 3 and planes.shape[2] == planes.shape[3]
    if planes.dtype != torch.float32 or not square:
        raise ValueError(f"plane_lookup: planes must be a float32 [3, C, R, R] tensor, got {planes.dtype} "
                         f"{list(planes.shape)}")
    if points.dtype != torch.float32 or points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"plane_lookup: points must be a float32 [N, 3] tensor, got {points.dtype} "
                         f"{list(points.shape)}")
    if planes.device.type != "cpu" or points.device.type != "cpu":
        raise ValueError(f"plane_lookup: CPU tensors only, got planes on {planes.device} and points on "
                         f"{points.device}")
    if points.requires_grad:
        raise ValueError("plane_lookup: the kernel has no gradient into the points")
    threads = n_threads if n_threads is not None else torch.get_num_threads()
    if threads < 1:
        raise ValueError(f"plane_lookup: n_threads must be >= 1, got {threads}")
    ext = load_extension("planes")
    table = planes.permute(0, 2, 3, 1).contiguous()  # [3, R, R, C]: a texel's channels together
    return _PlaneLookup.apply(points.contiguous(), table, threads, ext)
